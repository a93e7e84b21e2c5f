/**
 * The `grpc-js` transport: the transport-independent service (`handlers.ts`) adapted to
 * `@grpc/grpc-js` over `node:http2`. `server.ts` imports this module only when
 * `grpc_transport = "grpc-js"`.
 *
 * @module
 */
import {
  type handleServerStreamingCall,
  type handleUnaryCall,
  type MethodDefinition,
  Server,
  ServerCredentials,
  type ServerErrorResponse,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type status as GrpcStatus,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import type { Logger } from "../util/log.ts";
import { Code } from "./codes.ts";
import type { Buffer } from "node:buffer";
import { decodeRequest, type SnapshotsService, type UnaryMethod } from "./handlers.ts";
import {
  type EncodedMessage,
  loadSnapshotsProto,
  type MessageCodec,
  type MethodName,
  METHODS,
  type SnapshotsProto,
  type WireListResponse,
} from "./proto.ts";
import { SocketError } from "./socket.ts";
import { type Listening, MAX_MESSAGE_BYTES } from "./transport.ts";

/**
 * The service definition with requests left as bytes: they are decoded by the handlers
 * ({@linkcode decodeRequest}), because grpc-js answers any error of a deserializer INTERNAL,
 * and a string that is not UTF-8 is the client's bad argument.
 */
function rawRequestService(proto: SnapshotsProto): ServiceDefinition {
  const service: Record<string, MethodDefinition<object, object>> = {};
  for (const [name, method] of Object.entries(proto.service)) {
    service[name] = { ...method, requestDeserialize: (bytes: Buffer) => bytes };
  }
  return service;
}

/** Serves `service` with `@grpc/grpc-js` on the unix socket `path`. */
export async function listenGrpcJs(
  path: string,
  service: SnapshotsService,
  logger: Logger,
): Promise<Listening> {
  const proto = loadSnapshotsProto();
  const server = new Server({
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  });
  server.addService(rawRequestService(proto), createHandlers(service, logger, proto));
  await bind(server, path);
  return {
    drain: (timeoutMs) => drain(server, timeoutMs),
    force: () => server.forceShutdown(),
  };
}

function bind(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`unix://${path}`, ServerCredentials.createInsecure(), (err) => {
      if (err) {
        reject(new SocketError(`Cannot listen on "${path}": ${err.message}`, { cause: err }));
      } else resolve();
    });
  });
}

/** Waits up to `timeoutMs` for in-flight calls, then cuts off whatever is left. */
function drain(server: Server, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve(false);
    }, timeoutMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

function errorResponse(code: Code, details: string): ServerErrorResponse {
  return Object.assign(new Error(details), { code: code as number as GrpcStatus, details });
}

/** Resolves when the stream can take more data, or has been cancelled/closed. */
function waitWritable(call: ServerWritableStream<unknown, unknown>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      call.off("close", done);
      call.off("error", done);
      call.off("cancelled", done);
      resolve();
    };
    call.on("drain", done);
    call.on("close", done);
    call.on("error", done);
    call.on("cancelled", done);
  });
}

/** A unary method for grpc-js. */
function unary(
  service: SnapshotsService,
  method: UnaryMethod,
  codec: MessageCodec<object>,
  logger: Logger,
): handleUnaryCall<Uint8Array, object> {
  return (call: ServerUnaryCall<Uint8Array, object>, callback) => {
    const decoded = decodeRequest(codec, call.request);
    if (!("request" in decoded)) return callback(errorResponse(decoded.code, decoded.details));
    service.unary(method, decoded.request, () => call.cancelled ? Code.CANCELLED : undefined)
      .then((result) => {
        if (call.cancelled) return;
        if (result.code === Code.OK) callback(null, result.response);
        else callback(errorResponse(result.code, result.details));
      }).catch((err) => logger.error("cannot answer rpc", { method, error: err }));
  };
}

/** List for grpc-js. */
function listHandler(
  service: SnapshotsService,
  codec: MessageCodec<object>,
  logger: Logger,
): handleServerStreamingCall<Uint8Array, WireListResponse | EncodedMessage> {
  return (call) => {
    const stream = call as ServerWritableStream<unknown, unknown>;
    const decoded = decodeRequest(codec, call.request);
    if (!("request" in decoded)) {
      call.emit("error", errorResponse(decoded.code, decoded.details));
      return;
    }
    service.list(decoded.request, {
      write: (message) => call.write(message) ? Promise.resolve() : waitWritable(stream),
      gone: () => call.cancelled ? Code.CANCELLED : undefined,
    }).then((st) => {
      if (call.cancelled) return;
      if (st.code === Code.OK) call.end();
      else call.emit("error", errorResponse(st.code, st.details));
    }).catch((err) => logger.error("cannot answer rpc", { method: "List", error: err }));
  };
}

/**
 * Builds the service implementation for `@grpc/grpc-js`'s `Server.addService`, for a service
 * definition whose requests are raw bytes (see `rawRequestService`).
 */
export function createHandlers(
  service: SnapshotsService,
  logger: Logger,
  proto: SnapshotsProto,
): UntypedServiceImplementation {
  const codec = (method: MethodName) => proto.codec<object>(METHODS[method].request);
  const handlers: UntypedServiceImplementation = {
    List: listHandler(service, codec("List"), logger),
  };
  const methods: UnaryMethod[] = [
    "Prepare",
    "View",
    "Mounts",
    "Commit",
    "Remove",
    "Stat",
    "Update",
    "Usage",
    "Cleanup",
  ];
  for (const method of methods) handlers[method] = unary(service, method, codec(method), logger);
  return handlers;
}
