// The data gateway on loopback against an echoing stand-in for the data service: the per-source bound, and what happens
// to a source's connections when the cell behind it goes (forget). Sources are distinct loopback addresses, as cells'
// addresses are distinct; every socket is real.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { DataGateway } from '../../../src/agent/gateway/data-gateway.js';

const GATEWAY = '127.0.0.1';
const OLD_CELL = '127.0.0.2';
const NEIGHBOUR = '127.0.0.3';
const MAX_PER_SOURCE = 3;
/** How long a test waits for something that must happen: generous, since only a failing test ever waits this long. */
const WAIT_MS = 10_000;

function listening(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, GATEWAY, () => resolve((server.address() as { port: number }).port));
  });
}

function within<T>(what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within ${WAIT_MS} ms`)), WAIT_MS)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Client is one connection from a cell: `echo` is a round trip through the gateway, `closed` settles when the gateway cuts it. */
interface Client {
  socket: Socket;
  closed: Promise<void>;
  echo(data: string): Promise<string>;
}

async function open(port: number, from: string): Promise<Client> {
  const socket = connect({ host: GATEWAY, port, localAddress: from });
  socket.on('error', () => {});
  let isClosed = false;
  const closed = new Promise<void>((resolve) => socket.once('close', () => ((isClosed = true), resolve())));
  await within(`connect from ${from}`, new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject)));
  let received = '';
  socket.on('data', (d: Buffer) => (received += d.toString()));
  const echo = (data: string): Promise<string> =>
    within(
      `echo from ${from}`,
      new Promise<string>((resolve) => {
        const check = (): void => {
          if (received.length < data.length) return;
          socket.off('data', check);
          socket.off('close', onClose);
          resolve(received.slice(0, data.length));
          received = received.slice(data.length);
        };
        const onClose = (): void => resolve(`closed:${received}`);
        if (isClosed) return onClose();
        socket.on('data', check).once('close', onClose);
        socket.write(data);
        check();
      }),
    );
  return { socket, closed, echo };
}

test('a removed cell’s connections are cut and its count freed; other sources keep theirs', async () => {
  const upstreamOpen = new Set<Socket>();
  const upstream = createServer((s) => {
    upstreamOpen.add(s);
    s.on('error', () => {});
    s.on('close', () => upstreamOpen.delete(s));
    s.pipe(s);
  });
  const gateway = new DataGateway({ target: { host: GATEWAY, port: await listening(upstream) }, maxPerSource: MAX_PER_SOURCE });
  const probe = createServer();
  const port = await listening(probe);
  await new Promise((resolve) => probe.close(resolve));
  await gateway.listen(GATEWAY, port);
  const all: Client[] = [];
  const openFrom = async (from: string): Promise<Client> => {
    const c = await open(port, from);
    all.push(c);
    return c;
  };
  try {
    const old = await Promise.all(Array.from({ length: MAX_PER_SOURCE }, () => openFrom(OLD_CELL)));
    for (const [i, c] of old.entries()) assert.equal(await c.echo(`old-${i}`), `old-${i}`);
    const neighbour = await openFrom(NEIGHBOUR);
    assert.equal(await neighbour.echo('n1'), 'n1');
    // Control: one more from the same source is over its bound and cut at once.
    const over = await openFrom(OLD_CELL);
    assert.equal(await over.echo('over'), 'closed:', 'a connection beyond the per-source bound was forwarded');
    assert.equal(upstreamOpen.size, MAX_PER_SOURCE + 1);

    // The cell goes: its connections are cut (both sides), the neighbour's is not.
    gateway.forget(OLD_CELL);
    await within('the old cell’s connections closing', Promise.all(old.map((c) => c.closed)));
    for (let i = 0; i < WAIT_MS / 10 && upstreamOpen.size > 1; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(upstreamOpen.size, 1, 'the upstream side of a cut connection stayed open');
    assert.equal(await neighbour.echo('n2'), 'n2');

    // The next cell on the address has the whole bound: exactly MAX_PER_SOURCE connections, not fewer, not more.
    const next = await Promise.all(Array.from({ length: MAX_PER_SOURCE }, () => openFrom(OLD_CELL)));
    for (const [i, c] of next.entries()) assert.equal(await c.echo(`new-${i}`), `new-${i}`, 'the next cell on the address found its count used');
    const overAgain = await openFrom(OLD_CELL);
    assert.equal(await overAgain.echo('over'), 'closed:', 'the bound no longer holds after forget');
    assert.equal(await neighbour.echo('n3'), 'n3');
  } finally {
    for (const c of all) c.socket.destroy();
    await gateway.close();
    for (const s of upstreamOpen) s.destroy();
    await new Promise((resolve) => upstream.close(resolve));
  }
});
