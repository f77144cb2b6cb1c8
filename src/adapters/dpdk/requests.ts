import { lookupRequest, requestByName } from '../../protocol/requests.ts';

/**
 * vhost-user front-end request numbers by the names DPDK prints in `read message VHOST_USER_X`,
 * answered from the protocol catalogue (DPDK 22.11 spellings first; later or QEMU spellings
 * such as SET_BACKEND_REQ_FD are its aliases).
 */

/** Strips the `VHOST_USER_` prefix DPDK prints, so both spellings are accepted. */
export function shortRequestName(name: string): string {
  return name.startsWith('VHOST_USER_') ? name.slice('VHOST_USER_'.length) : name;
}

/** Request number for a printed name (`VHOST_USER_GET_FEATURES` or `GET_FEATURES`), if known. */
export function requestNumber(name: string): number | undefined {
  return requestByName(shortRequestName(name), 'frontend')?.code;
}

/** DPDK 22.11 short name for a request number, if known. */
export function requestName(n: number): string | undefined {
  return lookupRequest(n, 'frontend')?.name;
}
