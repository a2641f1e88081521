// fsutil.ts: the folders makeDir reports as made (what a failed run removes again, and nothing else), and the
// sweep of temporary files that writes cut short left behind.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeDir, removeEmptyDirs, sweepStaleTemps, tmpName } from '../src/fsutil.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-fsutil-'));

describe('makeDir and removeEmptyDirs', () => {
  it('reports exactly the levels it made, parents first; removing them keeps what was there and what is not empty', async () => {
    const root = tmp();
    mkdirSync(join(root, 'a'));
    const made = await makeDir(join(root, 'a', 'b', 'c'));
    expect(made).toEqual([join(root, 'a', 'b'), join(root, 'a', 'b', 'c')]);
    expect(await makeDir(join(root, 'a', 'b'))).toEqual([]);
    await removeEmptyDirs(made);
    expect(readdirSync(root)).toEqual(['a']);
    expect(readdirSync(join(root, 'a'))).toEqual([]);
    const again = await makeDir(join(root, 'a', 'x', 'y'));
    writeFileSync(join(root, 'a', 'x', 'kept.txt'), '');
    await removeEmptyDirs(again);
    expect(readdirSync(join(root, 'a', 'x'))).toEqual(['kept.txt']);
  });
});

describe('sweepStaleTemps', () => {
  it('removes the temporary files of processes that are gone, and nothing else', async () => {
    const dir = tmp();
    const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout);
    const names = {
      stale: `model.safetensors.tmp-${dead}-0badc0de`,
      mine: tmpName('model.safetensors'), // this process's: alive
      init: 'config.json.tmp-1-0badc0de', // pid 1 is always alive
      notOurs: `notes.tmp-${dead}-draft`,
      plain: 'model.safetensors',
    };
    for (const n of Object.values(names)) writeFileSync(join(dir, n), '');
    expect(await sweepStaleTemps(dir)).toEqual([names.stale]);
    expect(readdirSync(dir).sort()).toEqual([names.mine, names.init, names.notOurs, names.plain].sort());
    expect(await sweepStaleTemps(join(dir, 'missing'))).toEqual([]);
  });
});
