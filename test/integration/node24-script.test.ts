import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { makeCert } from '../helpers/tls-fixtures.ts';

const run = promisify(execFile);
const SCRIPT = new URL('../../scripts/node24.sh', import.meta.url).pathname;

/**
 * scripts/node24.sh on a machine whose *global* npmrc holds the `cafile` of a corporate CA, with
 * a registry only reachable through that CA. Nothing leaves the machine: the "registry" is an
 * HTTPS server on 127.0.0.1 with a self-signed certificate, serving a tiny stand-in `node@24`
 * package. The machine's npm is used as is; only `node` is made to look old (so the script
 * installs) and npm's global prefix is pointed at a temp dir with PREFIX.
 */
describe('scripts/node24.sh with a cafile in the global npmrc', { timeout: 60_000 }, () => {
  let dir: string;
  let server: Server;
  let registry: string;
  const requests: string[] = [];
  let env: NodeJS.ProcessEnv;
  let globalNpmrc: string;
  let caPath: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'plb13-node24-'));
    const cert = await makeCert(dir, 'registry', ['localhost'], ['127.0.0.1']);
    caPath = cert.certPath;

    // The stand-in node@24: `node --version` prints a marker (so the test sees which node ran);
    // anything else runs the real node, so npm still works on it.
    const pkg = join(dir, 'pkg', 'package');
    mkdirSync(join(pkg, 'bin'), { recursive: true });
    writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: 'node', version: '24.99.0', bin: { node: 'bin/node' } }));
    writeFileSync(join(pkg, 'bin', 'node'), `#!/bin/sh\nif [ "$1" = --version ]; then echo "stand-in node 24"; exit 0; fi\nexec "${process.execPath}" "$@"\n`);
    chmodSync(join(pkg, 'bin', 'node'), 0o755);
    const tgz = join(dir, 'node-24.99.0.tgz');
    await run('tar', ['-czf', tgz, '-C', join(dir, 'pkg'), 'package']);
    const tarball = readFileSync(tgz);

    server = createServer({ cert: cert.cert, key: cert.key }, (req, res) => {
      requests.push(`${req.method} ${req.url}`);
      if (req.url === '/node') {
        const version = {
          name: 'node',
          version: '24.99.0',
          bin: { node: 'bin/node' },
          dist: {
            tarball: `${registry}node/-/node-24.99.0.tgz`,
            shasum: createHash('sha1').update(tarball).digest('hex'),
            integrity: `sha512-${createHash('sha512').update(tarball).digest('base64')}`,
          },
        };
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ name: 'node', 'dist-tags': { latest: '24.99.0' }, versions: { '24.99.0': version } }));
      } else if (req.url === '/node/-/node-24.99.0.tgz') {
        res.setHeader('content-type', 'application/octet-stream');
        res.end(tarball);
      } else {
        res.statusCode = 404;
        res.end('{}');
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    registry = `https://127.0.0.1:${(server.address() as AddressInfo).port}/`;

    // The machine: its global npmrc (found through PREFIX, as npm finds /usr/etc/npmrc through
    // node's location) trusts the CA; the user's ~/.npmrc names the registry (so a test that
    // loses the global file still talks to this server, never to a real registry).
    const prefix = join(dir, 'machine-prefix');
    mkdirSync(join(prefix, 'etc'), { recursive: true });
    globalNpmrc = join(prefix, 'etc', 'npmrc');
    writeFileSync(globalNpmrc, `cafile=${caPath}\n`);
    const home = join(dir, 'home');
    mkdirSync(home);
    writeFileSync(join(home, '.npmrc'), `registry=${registry}\nupdate-notifier=false\nfund=false\naudit=false\n`);

    // `node` that fails node24.sh's version check (an old machine node) and runs the real one
    // for everything else (npm itself).
    const bin = join(dir, 'old-node-bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'node'), `#!/bin/sh\ncase "$2" in *process.versions.node*) exit 1;; esac\nexec "${process.execPath}" "$@"\n`);
    chmodSync(join(bin, 'node'), 0o755);
    const npm = await findOnPath('npm');
    // A clean environment: npm run exports npm_config_* variables that would mask the files.
    env = {
      PATH: [bin, dirname(npm), '/usr/bin', '/bin'].join(delimiter),
      HOME: home,
      PREFIX: prefix,
      PCOIP_LB_NODE_DIR: join(dir, 'node24'),
      npm_config_cache: join(dir, 'npm-cache'),
      // A certificate failure should fail now, not after npm's retries with back-off.
      npm_config_fetch_retries: '0',
    };
  });

  afterAll(async () => {
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the set-up reproduces the bug: `npm install --prefix` alone loses the global cafile and fails on the certificate', async () => {
    const bare = await run('npm', ['install', '--prefix', join(dir, 'bare'), '--no-save', '--loglevel=error', 'node@24'], { env, timeout: 30_000 }).then(
      () => ({ ok: true, stderr: '' }),
      (err: { stderr: string }) => ({ ok: false, stderr: err.stderr }),
    );
    expect(bare.ok).toBe(false);
    expect(bare.stderr).toMatch(/SELF_SIGNED|self[- ]signed|UNABLE_TO_VERIFY|unable to verify/i);
    expect((await run('npm', ['config', 'get', 'cafile', '--prefix', join(dir, 'bare')], { env })).stdout.trim()).toBe('null');
  });

  it('installs node@24 through the CA from the global npmrc, then runs the command on it with that npmrc still in force', async () => {
    requests.length = 0;
    const installed = await run('bash', [SCRIPT, 'node', '--version'], { env, timeout: 30_000 });
    expect(installed.stderr).toContain('node24.sh: installing Node 24');
    expect(installed.stdout.trim()).toBe('stand-in node 24');
    expect(requests).toContain('GET /node/-/node-24.99.0.tgz');

    // The command (here a shell, standing in for `npm ci` on the new node) sees the machine's
    // global npmrc pinned, so its downloads trust the same CA.
    const cmd = await run('bash', [SCRIPT, 'sh', '-c', 'echo "$npm_config_globalconfig"; npm config get cafile'], { env, timeout: 30_000 });
    expect(cmd.stdout.trim().split('\n')).toEqual([globalNpmrc, caPath]);
  });
});

async function findOnPath(name: string): Promise<string> {
  const { stdout } = await run('sh', ['-c', `command -v ${name}`]);
  return stdout.trim();
}
