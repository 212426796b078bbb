/** SandboxChannel is the port through which sandbox requests reach the agent that runs the sandbox (the agent hub). */
import type { AgentToControl, ControlToAgent } from '../../shared/wire.js';

/** SandboxRequestMessage is a sandbox message to an agent: sandbox.timeout, proc.*, file.*. */
export type SandboxRequestMessage = Extract<ControlToAgent, { type: 'sandbox.timeout' | `proc.${string}` | `file.${string}` }>;

/** SandboxReport is a sandbox message from an agent: proc.*, file.*. */
export type SandboxReport = Extract<AgentToControl, { type: `proc.${string}` | `file.${string}` }>;

/** SandboxChannel sends sandbox requests to agents. */
export interface SandboxChannel {
  /** send delivers a message to an agent; false when that agent is not connected now. */
  send(agentId: string, msg: SandboxRequestMessage): boolean;
}

/** isSandboxReport tells sandbox reports apart from job and pool reports. */
export function isSandboxReport(msg: AgentToControl): msg is SandboxReport {
  return msg.type.startsWith('proc.') || msg.type.startsWith('file.');
}
