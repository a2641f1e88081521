// File writes on a full disk: every write (atomic, synchronous, appended, and the callers that used to wrap
// the error as "check that the directory exists") says the disk is full, how much the file needed and how much
// was free, and leaves the old file and no temporary behind. The fault is injected at the write call
// (node:fs/promises and node:fs, below), so this runs anywhere; where this test may mount a tmpfs (root), a
// training run on a real full disk says the same.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { DiskFull } from '../src/errors.js';
import { appendFileSynced, ensureWritableDir, writeFileAtomic, writeFileAtomicSync } from '../src/fsutil.js';
import { initParams, paramLayout, widths, DEFAULT_HIDDEN } from '../src/model.js';
import { weightTensors, writeSafetensors } from '../src/safetensors.js';
import { fmtBytes } from '../src/ui/format.js';
import { mnistDir, runCli } from './cli-run.js';

// While `on`, every write of data fails as a full disk does (after the file was opened, as it happens).
const fault = vi.hoisted(() => ({ on: false }));
const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...real,
    open: async (...args: Parameters<typeof real.open>) => {
      const fh = await real.open(...args);
      if (fault.on) fh.writeFile = async () => { throw enospc(); };
      return fh;
    },
  };
});
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return {
    ...real,
    writeSync: (...args: Parameters<typeof real.writeSync>) => {
      if (fault.on) throw enospc();
      return (real.writeSync as (...a: unknown[]) => number)(...args);
    },
  };
});
afterEach(() => { fault.on = false; });

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-fsutil-'));
// "… the disk is full (ENOSPC); the file needs 3.0 MiB and the disk has 12.3 GiB free; free some space …"
const SIZE = String.raw`\d+(\.\d)? (bytes?|KiB|MiB|GiB|TiB)`;

describe('a full disk', () => {
  it('an atomic write says so, with the size the file needed and the space free, and keeps the old file', async () => {
    const dir = tmp();
    const path = join(dir, 'model.safetensors');
    writeFileSync(path, 'old');
    fault.on = true;
    const err = await writeFileAtomic(path, new Uint8Array(3 * 1024 * 1024)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DiskFull);
    expect((err as Error).message).toMatch(new RegExp(`^${path}: cannot write it: the disk is full \\(ENOSPC\\); the file needs 3\\.0 MiB ` +
      `and the disk has ${SIZE} free; free some space on that disk or write to a folder on another one$`));
    expect(readFileSync(path, 'utf8')).toBe('old');
    expect(readdirSync(dir)).toEqual(['model.safetensors']);
    // a string is counted in bytes, not characters
    await expect(writeFileAtomic(path, 'é'.repeat(600))).rejects.toThrow(/the file needs 1\.2 KiB /);
  });

  it('so does the synchronous write, and an append says how much it was adding', async () => {
    const dir = tmp();
    fault.on = true;
    expect(() => writeFileAtomicSync(join(dir, 'fonts.conf'), 'x'.repeat(100))).toThrow(/fonts\.conf: cannot write it: the disk is full \(ENOSPC\); the file needs 100 bytes /);
    expect(readdirSync(dir)).toEqual([]);
    fault.on = false;
    const csv = join(dir, 'batch_metrics.csv');
    writeFileSync(csv, 'epoch,batch\n');
    fault.on = true;
    await expect(appendFileSynced(csv, '1,1\n'.repeat(10))).rejects.toThrow(
      new RegExp(`batch_metrics\\.csv: cannot write it: the disk is full \\(ENOSPC\\); appending to it needed 40 bytes and the disk has ${SIZE} free;`));
    fault.on = false;
    await appendFileSynced(csv, '1,1\n');
    expect(readFileSync(csv, 'utf8')).toBe('epoch,batch\n1,1\n');
  });

  it('a model or checkpoint says the disk is full, not "check that the directory exists"; so does an output folder\'s probe', async () => {
    const dir = tmp();
    const layout = paramLayout(widths(DEFAULT_HIDDEN));
    const params = new Float32Array(layout.size);
    initParams(params, layout, 1);
    fault.on = true;
    const err = await writeSafetensors(join(dir, 'model.safetensors'), weightTensors(layout, params)).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/model\.safetensors: cannot write it: the disk is full \(ENOSPC\); the file needs 1\.3 MiB /);
    expect((err as Error).message).not.toContain('check that the directory exists');
    await expect(ensureWritableDir(join(dir, 'out'), '--out')).rejects.toThrow(
      new RegExp(`^--out ${join(dir, 'out')}: cannot write there: the disk is full \\(ENOSPC, ${SIZE} free\\); free some space on it or choose a folder on another disk with --out$`));
  });

  it('other failures are passed on as they were', async () => {
    await expect(writeFileAtomic(join(tmp(), 'no-such-dir', 'x'), 'x')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('sizes in binary units, as df -h counts them', () => {
    expect([0, 1, 100, 1023, 1024, 1536, 3 * 1024 ** 2, 5.5 * 1024 ** 3, 2 * 1024 ** 4].map(fmtBytes))
      .toEqual(['0 bytes', '1 byte', '100 bytes', '1023 bytes', '1.0 KiB', '1.5 KiB', '3.0 MiB', '5.5 GiB', '2.0 TiB']);
  });
});

// A real full disk: a 1 MiB tmpfs, where the first checkpoint (3.8 MiB with Adam's moments) does not fit.
const mountPoint = mkdtempSync(join(tmpdir(), 'mnist-par-tinyfs-'));
const mounted = process.getuid?.() === 0 && spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mountPoint]).status === 0;
afterAll(() => {
  if (mounted) spawnSync('umount', [mountPoint]);
  rmSync(mountPoint, { recursive: true, force: true });
});

describe.skipIf(!mounted)('a real full disk (a 1 MiB tmpfs; needs root to mount it)', () => {
  it('training stops with one line naming the checkpoint, its size and the space left, exit 1', () => {
    const out = join(mountPoint, 'run');
    const r = runCli(['--data-dir', mnistDir, '--no-download', '--limit-train', '512', '--limit-test', '100', '--epochs', '1',
      '--threads', '2', '--out', out, '--plots', join(tmp(), 'plots'), '--no-dashboard']);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^mnist-par: ${out}/checkpoint-last\\.safetensors: cannot write it: the disk is full \\(ENOSPC\\); ` +
      `the file needs 3\\.8 MiB and the disk has ${SIZE} free; free some space on that disk or write to a folder on another one\\n$`));
    expect(readdirSync(out).filter((f) => f.includes('.tmp-'))).toEqual([]);
    expect(existsSync(join(out, 'config.json'))).toBe(true);
  });
});
