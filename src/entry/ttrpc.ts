/**
 * `passfd-broker/ttrpc`: a ttrpc client and server (containerd/ttrpc's wire
 * protocol, unary calls) over any Node byte stream, typed by protobuf-es
 * method descriptors such as `agentMethods` from `passfd-broker/protocol`.
 */
export * from '../ttrpc/index.js';
