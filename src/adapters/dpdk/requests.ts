/**
 * vhost-user front-end request numbers by the names DPDK prints in `read message VHOST_USER_X`.
 *
 * A small table of its own so that log parsing does not depend on the protocol codec. Names
 * are the DPDK 22.11 spellings; later or QEMU spellings of the same request are aliases
 * (e.g. SET_SLAVE_REQ_FD, renamed SET_BACKEND_REQ_FD in DPDK 23.03).
 */
const TABLE: ReadonlyArray<readonly [number, string, ...string[]]> = [
  [1, 'GET_FEATURES'],
  [2, 'SET_FEATURES'],
  [3, 'SET_OWNER'],
  [4, 'RESET_OWNER'],
  [5, 'SET_MEM_TABLE'],
  [6, 'SET_LOG_BASE'],
  [7, 'SET_LOG_FD'],
  [8, 'SET_VRING_NUM'],
  [9, 'SET_VRING_ADDR'],
  [10, 'SET_VRING_BASE'],
  [11, 'GET_VRING_BASE'],
  [12, 'SET_VRING_KICK'],
  [13, 'SET_VRING_CALL'],
  [14, 'SET_VRING_ERR'],
  [15, 'GET_PROTOCOL_FEATURES'],
  [16, 'SET_PROTOCOL_FEATURES'],
  [17, 'GET_QUEUE_NUM'],
  [18, 'SET_VRING_ENABLE'],
  [19, 'SEND_RARP'],
  [20, 'NET_SET_MTU'],
  [21, 'SET_SLAVE_REQ_FD', 'SET_BACKEND_REQ_FD'],
  [22, 'IOTLB_MSG'],
  [23, 'SET_VRING_ENDIAN'],
  [24, 'GET_CONFIG'],
  [25, 'SET_CONFIG'],
  [26, 'CRYPTO_CREATE_SESS', 'CREATE_CRYPTO_SESSION'],
  [27, 'CRYPTO_CLOSE_SESS', 'CLOSE_CRYPTO_SESSION'],
  [28, 'POSTCOPY_ADVISE'],
  [29, 'POSTCOPY_LISTEN'],
  [30, 'POSTCOPY_END'],
  [31, 'GET_INFLIGHT_FD'],
  [32, 'SET_INFLIGHT_FD'],
  [33, 'GPU_SET_SOCKET'],
  [34, 'RESET_DEVICE'],
  [35, 'VRING_KICK'],
  [36, 'GET_MAX_MEM_SLOTS'],
  [37, 'ADD_MEM_REG'],
  [38, 'REM_MEM_REG'],
  [39, 'SET_STATUS'],
  [40, 'GET_STATUS'],
  [41, 'GET_SHARED_OBJECT'],
  [42, 'SET_DEVICE_STATE_FD'],
  [43, 'CHECK_DEVICE_STATE'],
];

const BY_NAME = new Map<string, number>();
const BY_NUMBER = new Map<number, string>();
for (const [n, name, ...aliases] of TABLE) {
  BY_NUMBER.set(n, name);
  BY_NAME.set(name, n);
  for (const a of aliases) BY_NAME.set(a, n);
}

/** Strips the `VHOST_USER_` prefix DPDK prints, so both spellings are accepted. */
export function shortRequestName(name: string): string {
  return name.startsWith('VHOST_USER_') ? name.slice('VHOST_USER_'.length) : name;
}

/** Request number for a printed name (`VHOST_USER_GET_FEATURES` or `GET_FEATURES`), if known. */
export function requestNumber(name: string): number | undefined {
  return BY_NAME.get(shortRequestName(name));
}

/** DPDK 22.11 short name for a request number, if known. */
export function requestName(n: number): string | undefined {
  return BY_NUMBER.get(n);
}
