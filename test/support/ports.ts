// Ports for test servers. A port the kernel hands out for `listen(0)` is in the ephemeral range, which outgoing
// connections use too: between the check and the server's own bind, any connection on the host (a test client, a
// runtime, a replica's peer call) can take it, and the server fails with EADDRINUSE (seen in a suite run). Ports below
// that range are never given to outgoing connections, so a port free when checked stays free for the server unless
// another listener takes the same one.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** LOWEST is where test ports start (clear of the well-known and most registered service ports). */
const LOWEST = 10_000;

/** freePort returns a loopback port that is free now, below the ephemeral range when the host leaves room for it. */
export async function freePort(): Promise<number> {
  const ephemeralStart = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  if (!(ephemeralStart > LOWEST + 1000)) return listenAndRelease(0);
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = LOWEST + Math.floor(Math.random() * (ephemeralStart - LOWEST));
    const got = await listenAndRelease(port).catch(() => 0);
    if (got) return got;
  }
  return listenAndRelease(0);
}

/** listenAndRelease listens on 127.0.0.1:port (0: any) and closes again; resolves the port, rejects if it is taken. */
function listenAndRelease(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}
