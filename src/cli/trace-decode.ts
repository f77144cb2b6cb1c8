/**
 * `vhostsim trace decode <file>`: one line per trace record, each message named and its
 * payload decoded, e.g.
 *
 *   3.456713 b2f GET_FEATURES reply size=8 features=0xd7c66e7cb CSUM|GUEST_CSUM|…
 *   10.524933 closed n=1
 *
 * Returns the lines; printing and exit codes belong to the caller. A malformed trace line
 * throws `TraceFormatError` (with its line number); a malformed message is printed with its
 * raw payload and `!code: reason`.
 */
import { formatMessage, requestName } from '../protocol/index.ts';
import {
  checkTraceMessage,
  isMessageRecord,
  readTraceFile,
  recordHeader,
  recordPayload,
  requestSpaceOfRecord,
  type TraceRecord,
} from '../sim/trace.ts';

export function formatTraceLine(r: TraceRecord): string {
  if (!isMessageRecord(r)) return `${r.t} ${r.event} n=${r.n}`;
  if (r.partial) {
    // seen in a log, bytes unknown: name it and say what the log told
    return `${r.t} ${r.dir} ${requestName(r.request, requestSpaceOfRecord(r))} (from log${r.decoded ? ': ' + r.decoded : ''})`;
  }
  const check = checkTraceMessage(r);
  const text = formatMessage(
    {
      header: recordHeader(r),
      payload: recordPayload(r),
      nfds: r.nfds,
      ...(check.decoded ? { decoded: check.decoded } : {}),
      ...(check.error ? { error: check.error } : {}),
    },
    requestSpaceOfRecord(r),
  );
  return `${r.t} ${r.dir} ${text}`;
}

export function decodeTraceRecords(records: Iterable<TraceRecord>): string[] {
  return Array.from(records, formatTraceLine);
}

export function traceDecode(path: string): string[] {
  return decodeTraceRecords(readTraceFile(path));
}
