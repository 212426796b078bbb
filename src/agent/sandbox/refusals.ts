/** refuseSandboxRequest answers a request for a sandbox that does not run on this agent (ended, lost, or never here). */
import type { AgentToControl } from '../../shared/wire.js';
import type { SandboxRequest } from './sandbox-session.js';

/** refuseSandboxRequest returns the answer to a request for a sandbox that is not running here, or null if none is due. */
export function refuseSandboxRequest(m: SandboxRequest): AgentToControl | null {
  const message = `sandbox ${m.jobId} is not running on this agent`;
  const code = 'sandbox_not_running' as const;
  switch (m.type) {
    case 'proc.start':
      return { type: 'proc.start.failed', jobId: m.jobId, procId: m.procId, code, message };
    case 'proc.stdin':
    case 'proc.signal':
    case 'proc.resize':
      return { type: 'proc.error', jobId: m.jobId, procId: m.procId, streamId: null, code, message };
    case 'proc.attach':
      return { type: 'proc.error', jobId: m.jobId, procId: m.procId, streamId: m.streamId, code, message };
    case 'proc.detach':
    case 'proc.list':
      return { type: 'proc.error', jobId: m.jobId, procId: null, streamId: m.type === 'proc.detach' ? m.streamId : null, code, message };
    case 'file.op':
    case 'file.data':
      return { type: 'file.result', jobId: m.jobId, opId: m.opId, ok: false, code, message };
    case 'proc.ack':
    case 'file.ack':
      return null; // acks for a stream or read that ended need no answer
    default:
      return assertNever(m);
  }
}

function assertNever(x: never): never {
  throw new Error(`unhandled ${JSON.stringify(x)}`);
}
