#!/usr/bin/env node
/**
 * Builds the offline busybox OCI image the README's containerd walkthrough
 * runs (the host's static busybox from Debian's busybox-static, no registry
 * needed), as an archive for `ctr image import`:
 *
 *   npm run build
 *   node scripts/busybox-image.mjs /tmp/busybox.tar [localhost/busybox:1]
 *   ctr image import /tmp/busybox.tar
 */
import { buildBusyboxImage } from '../dist/src/containerd/busybox-image.js';

const [output, name = 'localhost/busybox:1'] = process.argv.slice(2);
if (!output) {
  process.stderr.write('usage: busybox-image.mjs <output.tar> [image name, default localhost/busybox:1]\n');
  process.exit(2);
}
const digest = buildBusyboxImage({ output, name });
process.stdout.write(`${output}: ${name} (${digest})\n`);
