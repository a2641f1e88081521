import { readFileSync, writeFileSync, mkdirSync, copyFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import sharp from 'sharp';
const idx = (f, skip) => gunzipSync(readFileSync(f)).subarray(skip);
const M = '/work/shared/datasets/mnist', F = '/work/shared/datasets/fashion-mnist';
const csv = (img, lab, n) => ['label,' + Array.from({ length: 784 }, (_, i) => `pixel${i}`).join(','),
  ...Array.from({ length: n }, (_, i) => `${lab[i]},${img.subarray(i * 784, (i + 1) * 784).join(',')}`)].join('\n') + '\n';
writeFileSync('/tmp/readme/train.csv', csv(idx(`${M}/train-images-idx3-ubyte.gz`, 16), idx(`${M}/train-labels-idx1-ubyte.gz`, 8), 42000));
writeFileSync('/tmp/readme/digits-test.csv', csv(idx(`${M}/t10k-images-idx3-ubyte.gz`, 16), idx(`${M}/t10k-labels-idx1-ubyte.gz`, 8), 10000));
const names = ['T-shirt', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];
const fi = idx(`${F}/train-images-idx3-ubyte.gz`, 16), fl = idx(`${F}/train-labels-idx1-ubyte.gz`, 8);
for (const n of names) mkdirSync(`/tmp/readme/clothes/${n}`, { recursive: true });
for (let a = 0; a < 10000; a += 500) await Promise.all(Array.from({ length: 500 }, (_, k) => a + k).map((i) =>
  sharp(Buffer.from(fi.subarray(i * 784, (i + 1) * 784)), { raw: { width: 28, height: 28, channels: 1 } }).toColourspace('b-w').png()
    .toFile(`/tmp/readme/clothes/${names[fl[i]]}/${String(i).padStart(5, '0')}.png`)));
mkdirSync('/tmp/readme/fashion-idx', { recursive: true });
for (const [from, to] of [['train-images-idx3-ubyte.gz', 'fashion-train-images-idx3-ubyte.gz'], ['train-labels-idx1-ubyte.gz', 'fashion-train-labels-idx1-ubyte.gz'],
  ['t10k-images-idx3-ubyte.gz', 'fashion-test-images-idx3-ubyte.gz'], ['t10k-labels-idx1-ubyte.gz', 'fashion-test-labels-idx1-ubyte.gz']]) copyFileSync(`${F}/${from}`, `/tmp/readme/fashion-idx/${to}`);
