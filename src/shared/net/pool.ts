/** The cell address pool, shared by the agent (which carves it into workspace subnets) and the control plane (which refuses egress rules into it). */

/** CELL_POOL_CIDR is the private range cell addresses come from; no egress rule may point into it. */
export const CELL_POOL_CIDR = '10.88.0.0/16';
