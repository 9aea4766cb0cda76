import { fork, type ChildProcess } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import type { HostStats } from './proxy-host.ts';

/** Parent side of proxy-host.ts: start it, ask for stats, reload, stop. Every request is bounded in time. */
export interface ProxyHost {
  pid: number;
  ports: { broker: number; pcoipTcp: number; pcoipUdp: number };
  stats(): Promise<HostStats>;
  reload(): Promise<boolean>;
  stop(): Promise<void>;
}

const HOST = new URL('./proxy-host.ts', import.meta.url).pathname;

export async function startProxyHost(configPath: string, timeoutMs = 15_000): Promise<ProxyHost> {
  const child: ChildProcess = fork(HOST, [configPath], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let nextId = 1;
  const pending = new Map<number, (msg: Record<string, unknown>) => void>();
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('proxy host did not start in time')), timeoutMs);
    child.once('exit', (code) => reject(new Error(`proxy host exited with ${code} before it was ready`)));
    child.on('message', (raw) => {
      const msg = raw as Record<string, unknown>;
      if (msg.type === 'ready') {
        clearTimeout(timer);
        resolve(msg);
      } else pending.get(msg.id as number)?.(msg);
    });
  });
  const request = (type: string) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const id = nextId++;
      const timer = setTimeout(() => (pending.delete(id), reject(new Error(`proxy host: no answer to ${type}`))), timeoutMs);
      pending.set(id, (msg) => (clearTimeout(timer), pending.delete(id), resolve(msg)));
      child.send({ id, type });
    });
  const msg = await ready;
  const addresses = msg.addresses as Record<string, AddressInfo>;
  return {
    pid: msg.pid as number,
    ports: { broker: addresses.broker!.port, pcoipTcp: addresses.pcoipTcp!.port, pcoipUdp: addresses.pcoipUdp!.port },
    stats: async () => (await request('stats')).stats as HostStats,
    reload: async () => (await request('reload')).ok as boolean,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      await request('stop').catch(() => child.kill('SIGKILL'));
      await exited;
    },
  };
}
