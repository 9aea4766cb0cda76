/**
 * The things a bench puts between iperf3's client and server: nothing (direct), pcoip-lb
 * (the App in a child process), HAProxy (mode tcp) and NGINX stream (TCP + UDP). Each peer is
 * started from a config generated into a temp dir, listens on 127.0.0.1 on one port number for
 * TCP and UDP, and forwards to the "Connector" (an iperf3 server on 127.0.1.1).
 */
import { spawn, spawnSync, fork, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { writeFileSync, existsSync, createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import { freeTcpUdpPort } from './ports.ts';
import { cpuSecondsOfTree } from './proc.ts';

export const PROXY_HOST = '127.0.0.1';
export const CONNECTOR_HOST = '127.0.1.1';

export interface Peer {
  name: string;
  /** Where iperf3's client connects: TCP control and data, and UDP data, all on this port. */
  host: string;
  port: number;
  udp: boolean;
  /** False for a variant that only matters for UDP (its TCP side is the same as another peer's). */
  tcp?: boolean;
  /** Why UDP is not measured through this peer, when it is not. */
  udpNote?: string;
  /** The process whose CPU is charged to this peer (undefined for "direct"). */
  pid: number | undefined;
  cpuSeconds(): number;
  stop(): Promise<void>;
}

// ---------------------------------------------------------------- packages

export interface PeerPackages {
  iperf3: boolean;
  haproxy: boolean;
  nginxStream: boolean;
  notes: string[];
}

const NGINX_STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function present(): Omit<PeerPackages, 'notes'> {
  return { iperf3: onPath('iperf3'), haproxy: onPath('haproxy'), nginxStream: onPath('nginx') && existsSync(NGINX_STREAM_MODULE) };
}

/**
 * Installs the Debian packages that are missing (root with apt-get only); otherwise says
 * exactly what to install. Services are not started by the packages' scripts on a host whose
 * policy-rc.d forbids it; either way the bench runs its own instances from its own configs.
 */
export function ensurePeerPackages(log: (line: string) => void): PeerPackages {
  const want: Record<keyof Omit<PeerPackages, 'notes'>, string[]> = {
    iperf3: ['iperf3'],
    haproxy: ['haproxy'],
    nginxStream: ['nginx-light', 'libnginx-mod-stream'],
  };
  let have = present();
  const missing = (Object.keys(want) as Array<keyof typeof want>).filter((k) => !have[k]).flatMap((k) => want[k]);
  const notes: string[] = [];
  if (missing.length === 0) return { ...have, notes };
  const canApt = process.getuid?.() === 0 && onPath('apt-get');
  if (canApt) {
    log(`installing missing Debian packages: ${missing.join(' ')} (apt-get update + install)`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    spawnSync('apt-get', ['update', '-q'], { stdio: 'ignore', env, timeout: 180_000 });
    const r = spawnSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...missing], { stdio: 'ignore', env, timeout: 300_000 });
    if (r.status !== 0) notes.push(`apt-get install ${missing.join(' ')} failed (exit ${r.status})`);
    have = present();
  }
  const still = (Object.keys(want) as Array<keyof typeof want>).filter((k) => !have[k]);
  if (still.length > 0) {
    const pkgs = still.flatMap((k) => want[k]).join(' ');
    notes.push(`${canApt ? 'still missing' : 'not root or no apt-get'}: install with "sudo apt-get update && sudo apt-get install -y ${pkgs}"; skipping ${still.join(', ')}`);
  }
  return { ...have, notes };
}

// ---------------------------------------------------------------- process helpers

/** Resolves once something accepts TCP connections on host:port; rejects after `timeoutMs`. */
export async function waitForTcp(host: string, port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; Date.now() < deadline && attempt < 500; attempt++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host, port });
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listening on ${host}:${port} after ${timeoutMs} ms`);
}

/** Keeps the last few KB of a child's output, to explain why it died. */
function tail(child: ChildProcess): () => string {
  let text = '';
  const keep = (chunk: Buffer) => {
    text = (text + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return () => text.trim();
}

async function stopChild(child: ChildProcess, timeoutMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(timer);
}

function spawnPeer(name: string, cmd: string, args: string[]): { child: ChildProcess; output: () => string } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const output = tail(child);
  child.on('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGTERM' && signal !== 'SIGKILL') process.stderr.write(`${name} exited (${code ?? signal}): ${output()}\n`);
  });
  return { child, output };
}

async function started(name: string, child: ChildProcess, output: () => string, port: number): Promise<void> {
  const died = once(child, 'exit').then(() => {
    throw new Error(`${name} exited during start: ${output()}`);
  });
  await Promise.race([waitForTcp(PROXY_HOST, port), died]);
}

// ---------------------------------------------------------------- peers

export function directPeer(connectorPort: number): Peer {
  return { name: 'direct', host: CONNECTOR_HOST, port: connectorPort, udp: true, pid: undefined, cpuSeconds: () => 0, stop: async () => undefined };
}

export interface PcoipLbOptions {
  /** Extra node flags for the child, e.g. --cpu-prof. */
  execArgv?: string[];
  /** "src" runs src/app.ts (types stripped by Node); "dist" runs the compiled dist/app.js, as `pcoip-lb start` does. */
  from?: 'src' | 'dist';
  /** listeners.pcoipUdp.maxFlows, when the default does not fit the bench. */
  udpMaxFlows?: number;
  /** listeners.pcoipUdp.idleTimeout (e.g. "10m": the memory bench holds quiet flows open longer than the default 120 s). */
  udpIdleTimeout?: string;
  connectors?: Array<{ id: string; address: string; port: number }>;
  /** listeners.pcoipUdp.mediaQuality (default on); a peer with it off is named `pcoip-lb-mq-off`. */
  mediaQuality?: boolean;
}

export interface PcoipLbPeer extends Peer {
  child: ChildProcess;
  request<T>(type: string): Promise<T>;
}

const CHILD = fileURLToPath(new URL('./pcoip-lb-child.mjs', import.meta.url));

/** pcoip-lb with pcoipTcp and pcoipUdp on one port number in front of the given Connector(s). */
export async function startPcoipLb(dir: string, connectorPort: number, opts: PcoipLbOptions = {}): Promise<PcoipLbPeer> {
  const port = await freeTcpUdpPort(PROXY_HOST);
  const connectors = opts.connectors ?? [{ id: 'iperf', address: CONNECTOR_HOST, port: connectorPort }];
  const yaml = [
    'listeners:',
    `  pcoipTcp: { bind: "${PROXY_HOST}:${port}" }`,
    `  pcoipUdp: { bind: "${PROXY_HOST}:${port}"${opts.udpMaxFlows ? `, maxFlows: ${opts.udpMaxFlows}` : ''}${opts.udpIdleTimeout ? `, idleTimeout: ${opts.udpIdleTimeout}` : ''}${opts.mediaQuality === false ? ', mediaQuality: false' : ''} }`,
    'connectors:',
    ...connectors.map((c) => `  - { id: ${c.id}, address: ${c.address}, ports: { broker: ${c.port}, pcoip: ${c.port} } }`),
    // No active checks: an HTTPS probe of the iperf3 server's port would look to iperf3 like a
    // client starting a test. No passive checks either, and no admin server on its fixed port.
    'health: { checks: [], passive: { enabled: false } }',
    'admin: { enabled: false }',
    // Warnings such as "Connector unreachable on UDP" are expected when an iperf3 server exits
    // before the last datagrams of a test arrive; only errors belong in the bench output.
    'logging: { level: error }',
    '',
  ].join('\n');
  const configPath = join(dir, 'pcoip-lb.yaml');
  writeFileSync(configPath, yaml);
  const child = fork(CHILD, [configPath, opts.from ?? 'src'], {
    execArgv: ['--expose-gc', '--disable-warning=ExperimentalWarning', ...(opts.execArgv ?? [])],
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  });
  const output = tail(child);
  const ready = new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`pcoip-lb exited during start (${code}): ${output()}`)));
    const onMsg = (msg: { type?: string }) => {
      if (msg.type === 'ready') {
        child.off('message', onMsg);
        resolve();
      }
    };
    child.on('message', onMsg);
  });
  await ready;
  const pid = child.pid!;
  return {
    name: opts.mediaQuality === false ? 'pcoip-lb-mq-off' : 'pcoip-lb',
    host: PROXY_HOST,
    port,
    udp: true,
    pid,
    child,
    cpuSeconds: () => cpuSecondsOfTree(pid),
    request: <T>(type: string) =>
      new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`pcoip-lb did not answer "${type}" within 30 s`)), 30_000);
        const onMsg = (msg: { type?: string }) => {
          if (msg.type === type) {
            clearTimeout(timer);
            child.off('message', onMsg);
            resolve(msg as T);
          }
        };
        child.on('message', onMsg);
        child.send({ type });
      }),
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.send({ type: 'stop' });
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** HAProxy in mode tcp; one thread unless `threads` is 'auto' (HAProxy then uses every CPU). */
export async function startHaproxy(dir: string, connectorPort: number, threads: number | 'auto'): Promise<Peer> {
  const port = await freeTcpUdpPort(PROXY_HOST);
  const cfg = [
    'global',
    '  maxconn 4000',
    ...(threads === 'auto' ? [] : [`  nbthread ${threads}`]),
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 1h',
    '  timeout server 1h',
    'listen pcoip',
    `  bind ${PROXY_HOST}:${port}`,
    `  server iperf ${CONNECTOR_HOST}:${connectorPort}`,
    '',
  ].join('\n');
  const path = join(dir, 'haproxy.cfg');
  writeFileSync(path, cfg);
  const { child, output } = spawnPeer('haproxy', 'haproxy', ['-f', path, '-db']);
  await started('haproxy', child, output, port);
  const pid = child.pid!;
  return {
    name: 'haproxy',
    host: PROXY_HOST,
    port,
    udp: false,
    udpNote: 'HAProxy community edition has no UDP proxying',
    pid,
    cpuSeconds: () => cpuSecondsOfTree(pid),
    stop: () => stopChild(child),
  };
}

/**
 * NGINX stream: a TCP server and a UDP server (reuseport) on the same port number. With
 * `udpRcvbuf` (e.g. "4m") the UDP listening socket asks for that receive buffer, as pcoip-lb's
 * does; that variant is named "nginx-rcvbuf=4m" and is measured on UDP only.
 */
export async function startNginx(dir: string, connectorPort: number, workers: number | 'auto', udpRcvbuf?: string): Promise<Peer> {
  const name = udpRcvbuf ? `nginx-rcvbuf=${udpRcvbuf}` : 'nginx';
  const file = (suffix: string) => join(dir, `${udpRcvbuf ? `nginx-${udpRcvbuf}` : 'nginx'}${suffix}`);
  const port = await freeTcpUdpPort(PROXY_HOST);
  const upstream = `${CONNECTOR_HOST}:${connectorPort}`;
  const cfg = [
    `load_module ${NGINX_STREAM_MODULE};`,
    'daemon off;',
    'master_process on;',
    `worker_processes ${workers};`,
    `pid ${file('.pid')};`,
    `error_log ${file('-error.log')} warn;`,
    'events { worker_connections 4000; }',
    'stream {',
    `  server { listen ${PROXY_HOST}:${port}; proxy_pass ${upstream}; proxy_timeout 1h; }`,
    // No proxy_responses: the number of reply datagrams per client datagram is unlimited, as
    // PCoIP (and iperf3's UDP handshake) need; the session ends after proxy_timeout of silence.
    `  server { listen ${PROXY_HOST}:${port} udp reuseport${udpRcvbuf ? ` rcvbuf=${udpRcvbuf}` : ''}; proxy_pass ${upstream}; proxy_timeout 120s; }`,
    '}',
    '',
  ].join('\n');
  const path = file('.conf');
  writeFileSync(path, cfg);
  const { child, output } = spawnPeer(name, 'nginx', ['-c', path, '-p', dir, '-e', file('-error.log')]);
  await started(name, child, output, port);
  const pid = child.pid!;
  return {
    name,
    host: PROXY_HOST,
    port,
    udp: true,
    tcp: !udpRcvbuf,
    pid,
    // The master forks the workers that do the proxying: charge master + workers.
    cpuSeconds: () => cpuSecondsOfTree(pid),
    stop: () => stopChild(child),
  };
}

// ---------------------------------------------------------------- pcoip-lb through its CLI

export interface PcoipLbCliOptions {
  /** Names the config and log files (several instances may run side by side). */
  name: string;
  /** The `workers` key: 1 is the single-process path, N a primary and N workers. */
  workers: number | 'auto';
  /** Port number of pcoipTcp and pcoipUdp (picked free when omitted). */
  port?: number;
  connector: { address: string; pcoipPort: number; brokerPort?: number };
  /**
   * A pool instead of one Connector: entries conn-1 … conn-N at these addresses, each with
   * `connector`'s ports (whose address is then unused). Default: conn-a at `connector.address`.
   */
  poolAddresses?: string[];
  /** More YAML lines at the top level (health, admin, logging...); defaults apply to what is left out. */
  extraYaml?: string[];
  /** Extra keys inside listeners.pcoipUdp, as YAML flow-map text ("recvBufferSize: 262144"). */
  udpKeys?: string;
  /** Node flags for the primary; its worker processes inherit them (child_process.fork's execArgv). */
  nodeFlags?: string[];
  /** Run the CLI of another checkout (e.g. an export of main, to compare before/after in one run). */
  root?: string;
  /** Every line the process writes to stdout (JSON logs, --trace-gc lines) goes here too. */
  logFile?: string;
  /** Passed to `pcoip-lb start --log-level`. */
  logLevel?: string;
}

export interface PcoipLbCliPeer extends Peer {
  child: ChildProcess;
  /** The admin server's base URL, when the config enables it. */
  adminUrl: string | undefined;
}

/**
 * `pcoip-lb start` (the real CLI: primary + workers when workers > 1) from the TypeScript
 * sources, resolved once its start-up line is out.
 */
export async function startPcoipLbCli(dir: string, opts: PcoipLbCliOptions): Promise<PcoipLbCliPeer> {
  const port = opts.port ?? (await freeTcpUdpPort(PROXY_HOST));
  const { connector } = opts;
  const configPath = join(dir, `${opts.name}.yaml`);
  writeFileSync(
    configPath,
    [
      'listeners:',
      `  pcoipTcp: { bind: "${PROXY_HOST}:${port}" }`,
      `  pcoipUdp: { bind: "${PROXY_HOST}:${port}"${opts.udpKeys ? `, ${opts.udpKeys}` : ''} }`,
      'connectors:',
      ...(opts.poolAddresses?.map((address, i) => ({ id: `conn-${i + 1}`, address })) ?? [{ id: 'conn-a', address: connector.address }]).map(
        (c) => `  - { id: ${c.id}, address: ${c.address}, ports: { broker: ${connector.brokerPort ?? connector.pcoipPort}, pcoip: ${connector.pcoipPort} } }`,
      ),
      `workers: ${opts.workers}`,
      ...(opts.extraYaml ?? []),
      '',
    ].join('\n'),
  );
  const cli = join(opts.root ?? fileURLToPath(new URL('../..', import.meta.url)), 'src/cli.ts');
  const args = [...(opts.nodeFlags ?? []), cli, 'start', '--config', configPath, ...(opts.logLevel ? ['--log-level', opts.logLevel] : [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const output = tail(child);
  const log = opts.logFile ? createWriteStream(opts.logFile) : undefined;
  if (log) child.stdout!.pipe(log);
  const adminUrl = await new Promise<string | undefined>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${opts.name} did not start within 30 s: ${output()}`)), 30_000);
    child.once('exit', (code) => reject(new Error(`${opts.name} exited during start (${code}): ${output()}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!line.includes('pcoip-lb started')) return;
      clearTimeout(timer);
      resolve((JSON.parse(line) as { admin?: string }).admin?.replace(/\/$/, ''));
    });
  });
  const pid = child.pid!;
  return {
    name: opts.name,
    host: PROXY_HOST,
    port,
    udp: true,
    pid,
    child,
    adminUrl,
    cpuSeconds: () => cpuSecondsOfTree(pid),
    stop: () => stopChild(child, 15_000),
  };
}
