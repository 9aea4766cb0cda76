import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { once } from 'node:events';
import { startFakeConnector, type FakeConnector } from '../helpers/fake-connector.ts';
import { tcpGreeting } from '../helpers/clients.ts';
import { openUdpClient, echo, closed } from '../helpers/flow-clients.ts';
import { startCli, rawTestConfig, hasMsg, type CliProcess } from '../helpers/cli-process.ts';

/** The real CLI process, signalled as systemd or Kubernetes would signal it. */
describe('graceful shutdown on SIGTERM (real pcoip-lb process)', () => {
  let connector: FakeConnector;
  let cli: CliProcess | undefined;

  beforeAll(async () => {
    connector = await startFakeConnector('conn-a', '127.0.1.1');
  });
  afterEach(async () => {
    await cli?.cleanup();
    cli = undefined;
  });
  afterAll(async () => {
    await connector.close();
  });

  it('stops accepting, keeps open TCP and UDP flows working, and exits 0 as soon as they end', async () => {
    cli = await startCli(
      rawTestConfig([connector.config()], {
        shutdown: { grace: '30s' },
        listeners: { broker: { bind: '127.0.0.1:0' }, pcoipTcp: { bind: '127.0.0.1:0' }, pcoipUdp: { bind: '127.0.0.1:0', idleTimeout: '1s' } },
      }),
    );
    const { broker, pcoipUdp } = cli.ports;
    const tcp = await tcpGreeting(broker!, '127.0.2.1');
    const udp = await openUdpClient(pcoipUdp!, '127.0.2.1');
    expect((await udp.roundTrip('before')).toString()).toBe('conn-a|before');

    cli.child.kill('SIGTERM');
    await cli.waitForLine(hasMsg('shutting down'));

    // New TCP connections are refused: the listening socket is closed.
    const refused = connect({ host: '127.0.0.1', port: broker! });
    const [err] = (await once(refused, 'error')) as [NodeJS.ErrnoException];
    expect(err.code).toBe('ECONNREFUSED');
    // A new UDP source opens no flow; the established flow still passes both ways.
    const newcomer = await openUdpClient(pcoipUdp!, '127.0.2.2');
    newcomer.send('from a newcomer');
    expect((await udp.roundTrip('during')).toString()).toBe('conn-a|during');
    await echo(tcp.socket, 'still here');

    // The last TCP flow ends; the UDP flow ends by its idle timeout (1 s): the process exits
    // then, long before the 30 s grace, and without cutting anything.
    tcp.socket.end();
    udp.close();
    newcomer.close();
    const exit = await cli.exited;
    expect(exit).toBe(0);
    expect(cli.lines.some(hasMsg('shutdown grace period over'))).toBe(false);
    const stopped = cli.lines.find(hasMsg('stopped'));
    expect(stopped?.refused).toEqual({ 'pcoipUdp:shutting-down': 1 });
    // The Connector saw the two UDP packets of the established flow and nothing from the newcomer.
    expect(connector.seen.pcoipUdp.length).toBe(2);
  });

  it('closes flows still open when the grace period ends, then exits 0', async () => {
    cli = await startCli(rawTestConfig([connector.config()], { shutdown: { grace: '300ms' } }));
    const tcp = await tcpGreeting(cli.ports.pcoipTcp!, '127.0.2.3');
    cli.child.kill('SIGTERM');
    await closed(tcp.socket);
    const exit = await cli.exited;
    expect(exit).toBe(0);
    const over = cli.lines.find(hasMsg('shutdown grace period over'));
    expect(over?.flows).toEqual({ broker: 0, pcoipTcp: 1, pcoipUdp: 0 });
    expect(cli.lines.find((l) => l.msg === 'flow closed')?.reason).toBe('shutdown');
  });

  it('a second signal during the grace period exits at once with status 1', async () => {
    cli = await startCli(rawTestConfig([connector.config()], { shutdown: { grace: '30s' } }));
    const tcp = await tcpGreeting(cli.ports.broker!, '127.0.2.4');
    cli.child.kill('SIGTERM');
    await cli.waitForLine(hasMsg('shutting down'));
    cli.child.kill('SIGINT');
    expect(await cli.exited).toBe(1);
    expect(cli.lines.some(hasMsg('second signal'))).toBe(true);
    tcp.socket.destroy();
  });
});
