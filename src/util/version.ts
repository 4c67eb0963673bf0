/**
 * This package's version, from its package.json (found by walking up from
 * this file: dist/src/util/ once built, src/util/ under tsx).
 */
import fs from 'node:fs';
import path from 'node:path';

export function packageVersion(): string {
  for (let dir = import.meta.dirname; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'passfd-broker' && pkg.version) return pkg.version;
    } catch {
      // no package.json here
    }
    if (path.dirname(dir) === dir) return 'unknown';
  }
}
