/**
 * registerE2b adds the e2b compatibility layer to the API listener: the REST subset (`/v2/sandboxes`, `/sandboxes/:id`…)
 * and envd (`/process.Process/*`, `/filesystem.Filesystem/*`, `/files`, `/health`, routed by the E2b-Sandbox-Id header).
 * Point the SDK at it with E2B_API_URL and E2B_SANDBOX_URL both set to the API's URL. The routes are marked
 * `compat: 'e2b'` and are not part of Cleanroom's OpenAPI document (they are e2b's API, documented in the README).
 */
import { ForwardElsewhere, type SandboxForwarder } from '../../cluster/sandbox-forwarder.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ControlServices } from '../../services.js';
import type { LongBodies } from '../listener.js';
import type { Authenticator } from '../route-table.js';
import { answerUnary, answerUnaryError, ConnectStream, parseJson, readBody, readStreamRequest } from './connect-protocol.js';
import { ConnectError, connectError } from './e2b-errors.js';
import { e2bErrorHandler, registerE2bSandboxRoutes } from './e2b-sandboxes.js';
import { answerFilesError, EnvdFiles } from './envd-files.js';
import { EnvdFilesystemService } from './envd-filesystem.js';
import { EnvdGateway } from './envd-gateway.js';
import { EnvdProcessService } from './envd-process.js';
import { EnvdTokens } from './envd-tokens.js';
import { EnvdWatch } from './envd-watch.js';

/** E2bDeps are what the layer needs of the control plane. */
export interface E2bDeps {
  services: ControlServices;
  authenticate: Authenticator;
  longBodies: LongBodies;
  /** forwarder hands requests for sandboxes whose agent is on another replica to that replica (several replicas only). */
  forwarder?: SandboxForwarder | null;
  /** domain is returned to the SDK as the sandboxes' domain (null: clients set E2B_SANDBOX_URL). */
  domain?: string | null;
}

type Json = Record<string, unknown>;

/** registerE2b registers every e2b route on `app`. */
export function registerE2b(app: FastifyInstance, d: E2bDeps): void {
  const s = d.services;
  const tokens = new EnvdTokens((ws) => s.keyring.workspaceKey(ws));
  const gateway = new EnvdGateway(s.store, s.sandboxes, tokens, s.quotas);
  const forwarder = d.forwarder ?? null;
  if (forwarder) gateway.elsewhere = (agentId) => forwarder.replicaHolding(agentId);
  const proc = new EnvdProcessService(s.processes, s.quotas);
  const fs = new EnvdFilesystemService(s.files);
  const watch = new EnvdWatch(s.files, s.quotas);
  const files = new EnvdFiles(gateway, s.files, d.longBodies);

  void app.register(async (scope) => {
    scope.setErrorHandler(e2bErrorHandler);
    registerE2bSandboxRoutes(scope, { sandboxes: s.sandboxes, tokens, authenticate: d.authenticate, domain: d.domain ?? null });
  });

  void app.register(async (scope) => {
    // envd bodies are read by the handlers themselves (envelopes, multipart, octet-stream): no parsing here.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    const compat = { compat: 'e2b' };

    const unary: Record<string, (sb: Awaited<ReturnType<EnvdGateway['resolve']>>, body: Json) => Promise<Json>> = {
      'process.Process/List': (sb) => proc.list(sb),
      'process.Process/SendInput': (sb, b) => proc.sendInput(sb, b),
      'process.Process/SendSignal': (sb, b) => proc.sendSignal(sb, b),
      'process.Process/CloseStdin': (sb, b) => proc.closeStdin(sb, b),
      'process.Process/Update': (sb, b) => proc.update(sb, b),
      'filesystem.Filesystem/Stat': (sb, b) => fs.stat(sb, b),
      'filesystem.Filesystem/ListDir': (sb, b) => fs.listDir(sb, b),
      'filesystem.Filesystem/MakeDir': (sb, b) => fs.makeDir(sb, b),
      'filesystem.Filesystem/Move': (sb, b) => fs.move(sb, b),
      'filesystem.Filesystem/Remove': (sb, b) => fs.remove(sb, b),
    };
    const streaming = new Set(['process.Process/Start', 'process.Process/Connect', 'filesystem.Filesystem/WatchDir']);
    // The unary watcher calls (CreateWatcher, GetWatcherEvents, RemoveWatcher) are not served: they would need watcher
    // state between requests, and the SDK uses the WatchDir stream. They answer unimplemented like any unknown method.

    const rpc = async (request: FastifyRequest, reply: FastifyReply, service: string) => {
      reply.hijack();
      const req = request.raw;
      const res = reply.raw;
      const name = `${service}/${(request.params as { method: string }).method}`;
      if (streaming.has(name)) {
        try {
          const body = await readStreamRequest(req);
          const sb = await gateway.resolve(req);
          if (name === 'process.Process/Start') return await proc.start(sb, body, req, res);
          if (name === 'process.Process/Connect') return await proc.connect(sb, body, req, res);
          return await watch.watchDir(sb, body, req, res);
        } catch (e) {
          if (res.headersSent) return void res.destroy();
          return new ConnectStream(res, {}, 60).end(connectError(e));
        }
      }
      try {
        const handler = unary[name];
        if (!handler) {
          req.resume();
          throw new ConnectError('unimplemented', `${name} is not supported by Cleanroom's e2b layer`);
        }
        const body = parseJson(await readBody(req));
        const sb = await gateway.resolve(req);
        answerUnary(res, await handler(sb, body));
      } catch (e) {
        answerUnaryError(res, connectError(e));
      }
    };
    scope.route({ method: 'POST', url: '/process.Process/:method', config: compat, handler: (rq, rp) => rpc(rq, rp, 'process.Process') });
    scope.route({ method: 'POST', url: '/filesystem.Filesystem/:method', config: compat, handler: (rq, rp) => rpc(rq, rp, 'filesystem.Filesystem') });

    const plain = (serve: (req: FastifyRequest['raw'], res: FastifyReply['raw']) => Promise<void>) => async (request: FastifyRequest, reply: FastifyReply) => {
      reply.hijack();
      try {
        await serve(request.raw, reply.raw);
      } catch (e) {
        if (e instanceof ForwardElsewhere && forwarder && !reply.raw.headersSent) return forwarder.forward(e.target, request.raw, reply.raw);
        answerFilesError(reply.raw, e);
        if (!request.raw.complete) request.raw.resume();
      }
    };
    scope.route({ method: 'GET', url: '/files', config: compat, handler: plain((rq, rs) => files.download(rq, rs)) });
    scope.route({ method: 'POST', url: '/files', config: compat, handler: plain((rq, rs) => files.upload(rq, rs)) });
    scope.route({
      method: 'GET',
      url: '/health',
      config: compat,
      handler: plain(async (rq, rs) => {
        await gateway.resolve(rq);
        rs.writeHead(204).end();
      }),
    });
  });
}
