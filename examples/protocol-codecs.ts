/**
 * The wire formats as pure codecs (`passfd-broker/protocol`): no socket, no
 * process, bytes in and values out. What a Kata runtime writes on the
 * hybrid-vsock socket and what the device answers, the virtio-vsock header a
 * REQUEST packet carries, and a ttrpc frame naming an agent method.
 *
 *   node --import tsx examples/protocol-codecs.ts
 */
import {
  agentMethods,
  decodeHeader,
  encodeConnect,
  encodeFrame,
  encodeHeader,
  encodeOk,
  encodePassfd,
  encodePassfdPayload,
  HybridCommandParser,
  makeHeader,
  OkReplyParser,
  parsePassfdPayload,
  TtrpcFrameDecoder,
  TtrpcMessageType,
  VsockOp,
} from 'passfd-broker/protocol';

// A runtime asks for passfd: the command line, then (with the fd) the port.
const command = new HybridCommandParser().push(encodePassfd());
console.log('device reads', command?.command, 'then', parsePassfdPayload(encodePassfdPayload(1027, true)));
console.log('runtime reads', new OkReplyParser().push(encodeOk(1073741824)));
console.log('CONNECT on the wire', JSON.stringify(encodeConnect(1024).toString()));

// The guest-bound REQUEST the device sends for that connection.
const hdr = makeHeader({ srcCid: 2, dstCid: 3, srcPort: 1073741824, dstPort: 1027, op: VsockOp.REQUEST });
const wire = encodeHeader(hdr);
console.log(`vsock header: ${wire.length} bytes, decodes to`, decodeHeader(wire));

// A ttrpc request frame (payload omitted) and its decoding, split across two reads.
const frame = encodeFrame(1, TtrpcMessageType.REQUEST, new Uint8Array([1, 2, 3]));
const decoder = new TtrpcFrameDecoder();
const frames = [...decoder.push(frame.subarray(0, 4)), ...decoder.push(frame.subarray(4))];
console.log(
  'ttrpc frames',
  frames.map((f) => ({ streamId: f.streamId, type: f.type, bytes: f.payload.length })),
);
console.log('agent method', agentMethods.WaitProcess.service, agentMethods.WaitProcess.name);
