#!/usr/bin/env node
// Entry point for the installed command; the TypeScript sources are compiled to dist/ by
// `npm install` (the `prepare` script) or `npm run build`.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(`pcoip-lb needs Node.js >= 22.18 (24 LTS recommended); this is ${process.version}\n`);
  process.exit(1);
}
await import('../dist/cli.js');
