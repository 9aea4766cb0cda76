import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { parseAllDocuments, parse } from 'yaml';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { ConfigMap, Service } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { checkConfigText, parseConfigText } from '../../src/config/load.ts';
import type { Config } from '../../src/config/schema.ts';

const run = promisify(execFile);
const ROOT = new URL('../..', import.meta.url).pathname;
const file = (path: string) => readFileSync(`${ROOT}${path}`, 'utf8');
const pkg = JSON.parse(file('package.json')) as { version: string; license: string };
const defaults = parseConfigText('listeners: { pcoipUdp: { bind: "127.0.0.1:4172" } }\nconnectors: [{ id: a, address: 192.0.2.1 }]\n', 'x.yaml');
/** The probe paths the admin server serves (issue 13): liveness and readiness. */
const LIVEZ = '/livez';
const READYZ = '/readyz';

interface Instruction {
  op: string;
  args: string;
}

/** Dockerfile instructions, stage by stage (line continuations joined, comments dropped). */
function dockerStages(text: string): Instruction[][] {
  const stages: Instruction[][] = [];
  const joined = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  for (const line of joined) {
    const [, op, args] = /^(\S+)\s+(.*)$/.exec(line)!;
    if (op!.toUpperCase() === 'FROM') stages.push([]);
    stages.at(-1)!.push({ op: op!.toUpperCase(), args: args!.replace(/\s+/g, ' ') });
  }
  return stages;
}

describe('Dockerfile (no Docker engine here: its instructions are checked, its health command run)', () => {
  const stages = dockerStages(file('Dockerfile'));
  const runtime = stages.at(-1)!;
  const all = stages.flat();

  it('installs dependencies from package*.json before the sources come in (layer caching)', () => {
    for (const stage of stages.filter((s) => s.some((i) => i.op === 'RUN' && i.args.includes('npm ci')))) {
      const ci = stage.findIndex((i) => i.op === 'RUN' && i.args.includes('npm ci'));
      const manifests = stage.findIndex((i) => i.op === 'COPY' && i.args.startsWith('package.json package-lock.json'));
      const src = stage.findIndex((i) => i.op === 'COPY' && / src /.test(` ${i.args} `));
      expect(manifests).toBeGreaterThanOrEqual(0);
      expect(manifests).toBeLessThan(ci);
      if (src >= 0) expect(ci).toBeLessThan(src);
    }
  });

  it('bakes no config: the runtime stage copies nothing to /etc/pcoip-lb, and start reads the mounted one', () => {
    expect(all.filter((i) => i.op === 'COPY' && i.args.includes('/etc/'))).toEqual([]);
    expect(runtime.find((i) => i.op === 'CMD')!.args).toBe('["start", "--config", "/etc/pcoip-lb/pcoip-lb.yaml"]');
  });

  it('has no npm in the runtime stage and runs as the non-root node user', () => {
    const removal = runtime.find((i) => i.op === 'RUN')!.args;
    for (const path of ['/usr/local/lib/node_modules/npm', '/usr/local/bin/npm', '/usr/local/bin/npx']) expect(removal).toContain(path);
    expect(runtime.filter((i) => i.op === 'RUN')).toHaveLength(1);
    for (const i of runtime.filter((x) => ['CMD', 'ENTRYPOINT', 'HEALTHCHECK'].includes(x.op))) expect(i.args).not.toMatch(/\bnpm\b/);
    expect(runtime.find((i) => i.op === 'USER')!.args).toBe('node');
  });

  it('carries OCI labels that agree with package.json', () => {
    const labels = runtime.filter((i) => i.op === 'LABEL').map((i) => i.args).join(' ');
    const value = (key: string) => new RegExp(`org\\.opencontainers\\.image\\.${key}="([^"]*)"`).exec(labels)?.[1];
    expect(value('title')).toBe('pcoip-lb');
    expect(value('version')).toBe(pkg.version);
    expect(value('licenses')).toBe(pkg.license);
    expect(value('description')).toBeTruthy();
  });

  it('exposes the proxy ports and, deliberately, the admin port of the default admin.bind', () => {
    const exposed = runtime.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(' '));
    expect(exposed).toEqual(['443/tcp', '4172/tcp', '4172/udp', `${defaults.admin.bind.port}/tcp`]);
    expect(runtime.find((i) => i.op === 'STOPSIGNAL')!.args).toBe('SIGTERM');
  });

  it('copies only what exists and is not excluded by .dockerignore', () => {
    const ignored = file('.dockerignore').split('\n').filter(Boolean);
    const sources = all.filter((i) => i.op === 'COPY' && !i.args.startsWith('--from')).flatMap((i) => i.args.split(' ').slice(0, -1));
    for (const s of sources) {
      expect(existsSync(`${ROOT}${s}`), s).toBe(true);
      expect(ignored.some((g) => s === g || s.startsWith(`${g}/`)), s).toBe(false);
    }
  });

  describe('HEALTHCHECK runs node against /livez', () => {
    let server: Server;
    let answer = 200;
    const paths: string[] = [];
    beforeAll(async () => {
      server = createServer((req, res) => {
        paths.push(req.url!);
        res.statusCode = answer;
        res.end();
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    });
    afterAll(() => new Promise<void>((r) => server.close(() => r())));

    it('exits 0 on 200 and 1 on 503 or no server; the default URL is /livez on the default admin port', async () => {
      const env = runtime.find((i) => i.op === 'ENV')!.args;
      expect(env).toContain(`PCOIP_LB_LIVEZ_URL=http://127.0.0.1:${defaults.admin.bind.port}${LIVEZ}`);
      const health = runtime.find((i) => i.op === 'HEALTHCHECK')!.args;
      const script = JSON.parse(health.slice(health.indexOf('CMD ') + 4)) as string[];
      expect(script.slice(0, 2)).toEqual(['node', '-e']);
      const probe = (url: string) =>
        run(process.execPath, ['-e', script[2]!], { env: { PCOIP_LB_LIVEZ_URL: url } }).then(
          () => 0,
          (e: { code: number }) => e.code,
        );
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}${LIVEZ}`;
      expect(await probe(url)).toBe(0);
      answer = 503;
      expect(await probe(url)).toBe(1);
      expect(await probe('http://127.0.0.1:1/livez')).toBe(1);
      expect(paths).toEqual([LIVEZ, LIVEZ]);
    });
  });

  it('the probe paths exist on a real admin server: with every Connector out, /livez stays 200 (the HEALTHCHECK passes) while /readyz is 503', async () => {
    const { App } = await import('../../src/app.ts');
    const { createLogger } = await import('../../src/logger.ts');
    const { testConfig } = await import('../helpers/proxy.ts');
    // Loopback Connector in maint, no active checks: nothing takes new clients, nothing is dialled.
    const app = new App(testConfig([{ id: 'k-a', address: '127.0.43.1', ports: { broker: 1, pcoip: 1 }, weight: 1, state: 'maint' }]), createLogger('silent'));
    await app.start();
    try {
      const base = `http://127.0.0.1:${app.adminAddress!.port}`;
      expect((await fetch(`${base}${LIVEZ}`)).status).toBe(200);
      expect((await fetch(`${base}${READYZ}`)).status).toBe(503);
      const health = runtime.find((i) => i.op === 'HEALTHCHECK')!.args;
      const script = JSON.parse(health.slice(health.indexOf('CMD ') + 4)) as string[];
      await run(process.execPath, ['-e', script[2]!], { env: { PCOIP_LB_LIVEZ_URL: `${base}${LIVEZ}` } });
    } finally {
      await app.stop(0);
    }
  });

  it('compose example: stop_grace_period outlasts shutdown.grace, the config is mounted read-only', () => {
    const compose = parse(file('deploy/docker/compose.yaml')) as { services: Record<string, Record<string, unknown>> };
    const svc = compose.services['pcoip-lb']!;
    expect(Number(/^(\d+)s$/.exec(String(svc.stop_grace_period))![1]) * 1000).toBeGreaterThan(defaults.shutdown.grace);
    expect(svc.volumes).toEqual(['./pcoip-lb.yaml:/etc/pcoip-lb/pcoip-lb.yaml:ro']);
    expect(svc.ports).toEqual(expect.arrayContaining(['443:443/tcp', '4172:4172/tcp', '4172:4172/udp']));
  });
});

describe('deploy/k8s/pcoip-lb.yaml', () => {
  const docs = parseAllDocuments(file('deploy/k8s/pcoip-lb.yaml')).map((d) => d.toJS() as Record<string, any>);
  const byKind = (kind: string, name?: string) => docs.find((d) => d.kind === kind && (!name || d.metadata.name === name))!;
  const configMap = byKind('ConfigMap');
  const deployment = byKind('Deployment');
  const service = byKind('Service', 'pcoip-lb');
  const container = deployment.spec.template.spec.containers[0];
  const configText = configMap.data['pcoip-lb.yaml'] as string;
  let config: Config;

  it('every object validates against the Kubernetes API schema (kubernetes-models, offline)', () => {
    expect(docs.map((d) => d.kind)).toEqual(['ConfigMap', 'Deployment', 'Service', 'Service']);
    const models: Record<string, new (o: any) => { validate(): void }> = { ConfigMap, Deployment, Service };
    for (const d of docs) expect(() => new models[d.kind]!(d).validate(), `${d.kind} ${d.metadata.name}`).not.toThrow();
    // The validator is not a no-op: a port that is not a number is refused.
    expect(() => new Service({ ...service, spec: { ...service.spec, ports: [{ port: 'https' }] } }).validate()).toThrow(/port/);
  });

  it("the ConfigMap's config passes check-config (with the Secret's token in the environment) and the JSON Schema", () => {
    config = checkConfigText(configText, 'configmap:pcoip-lb.yaml', { env: { PCOIP_LB_ADMIN_TOKEN: '0123456789abcdef0123' } }).config;
    const ajv = new Ajv2020({ strict: true });
    expect(ajv.validate(JSON.parse(file('config/pcoip-lb.schema.json')) as object, parse(configText)), JSON.stringify(ajv.errors)).toBe(true);
    const tokenEnv = container.env.find((e: { name: string }) => e.name === config.admin.token!.env);
    expect(tokenEnv.valueFrom.secretKeyRef).toEqual({ name: 'pcoip-lb-admin', key: 'token' });
  });

  it('one LoadBalancer Service carries 443/TCP, 4172/TCP and 4172/UDP to the ports the config binds, keeping client addresses', () => {
    config ??= parseConfigText(configText, 'x.yaml');
    expect(service.spec.type).toBe('LoadBalancer');
    expect(service.spec.externalTrafficPolicy).toBe('Local');
    const containerPort = (name: string) => container.ports.find((p: { name: string }) => p.name === name);
    const served = service.spec.ports.map((p: { port: number; protocol: string; targetPort: string }) => {
      const target = containerPort(p.targetPort);
      expect(target.protocol, p.targetPort).toBe(p.protocol);
      return `${p.port}/${p.protocol} -> ${target.containerPort}`;
    });
    const l = config.listeners;
    expect(served).toEqual([`443/TCP -> ${l.broker!.bind.port}`, `4172/TCP -> ${l.pcoipTcp!.bind.port}`, `4172/UDP -> ${l.pcoipUdp!.bind.port}`]);
    // Ports below 1024 as the non-root user: the pod's unprivileged-port sysctl.
    const pod = deployment.spec.template.spec;
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.securityContext.sysctls).toContainEqual({ name: 'net.ipv4.ip_unprivileged_port_start', value: '0' });
  });

  it('probes /livez (liveness) and /readyz (readiness) on the admin port; the grace period outlasts shutdown.grace', () => {
    config ??= parseConfigText(configText, 'x.yaml');
    const admin = container.ports.find((p: { name: string }) => p.name === 'admin');
    expect(admin.containerPort).toBe(config.admin.bind.port);
    expect(container.livenessProbe.httpGet).toEqual({ path: LIVEZ, port: 'admin' });
    expect(container.readinessProbe.httpGet).toEqual({ path: READYZ, port: 'admin' });
    expect(config.admin.bind.host).toBe('0.0.0.0');
    expect(deployment.spec.template.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(config.shutdown.grace);
    expect(container.args).toEqual(['start', '--config', `${container.volumeMounts[0].mountPath}/pcoip-lb.yaml`]);
  });
});
