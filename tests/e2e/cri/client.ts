/**
 * A small client of the Kubernetes CRI (`runtime.v1` RuntimeService and ImageService) over
 * containerd's unix socket, built on `@grpc/grpc-js` and protobufjs with the reduced proto
 * `runtime_v1.proto` beside this file: what the end-to-end CRI test needs, as kubelet would
 * call it.
 *
 * Invariants: every call has a deadline (default 60 s); decoded messages use proto field
 * names, enums as their names, 64-bit integers as numbers, and unset message fields as
 * `null` (so a test can tell an absent field from a zero); failed calls reject with
 * {@linkcode CriCallError}, which names the method and carries the gRPC code.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { type Client, credentials, makeGenericClientConstructor, Metadata } from "@grpc/grpc-js";
import protobuf from "protobufjs";

/** Proto package of the CRI version containerd 1.6 serves besides `v1alpha2`. */
export const CRI_PACKAGE = "runtime.v1";

const PROTO_URL = new URL("./runtime_v1.proto", import.meta.url);

const DECODE: protobuf.IConversionOptions = {
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  objects: true,
};

/** A CRI call failed. */
export class CriCallError extends Error {
  /** gRPC status code (e.g. 2 Unknown, 5 NotFound, 14 Unavailable). */
  readonly code: number;
  /** Creates the error. */
  constructor(message: string, code: number, options?: ErrorOptions) {
    super(message, options);
    this.name = "CriCallError";
    this.code = code;
  }
}

/** `NamespaceMode` names. */
export type NamespaceMode = "POD" | "CONTAINER" | "NODE" | "TARGET";

/** `NamespaceOption`. */
export interface NamespaceOption {
  network?: NamespaceMode;
  pid?: NamespaceMode;
  ipc?: NamespaceMode;
}

/** `PodSandboxConfig` (the fields the test sets). */
export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt?: number };
  hostname?: string;
  log_directory?: string;
  labels?: Record<string, string>;
  linux?: {
    cgroup_parent?: string;
    security_context?: { namespace_options?: NamespaceOption; privileged?: boolean };
  };
}

/** `ContainerConfig` (the fields the test sets). */
export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  working_dir?: string;
  envs?: { key: string; value: string }[];
  labels?: Record<string, string>;
  log_path?: string;
  linux?: { security_context?: { namespace_options?: NamespaceOption } };
}

/** `UInt64Value`, or null when the runtime left it out. */
export type UInt64Value = { value: number } | null;

/** `FilesystemUsage`. */
export interface FilesystemUsage {
  timestamp: number;
  fs_id: { mountpoint: string } | null;
  used_bytes: UInt64Value;
  inodes_used: UInt64Value;
}

/** `ContainerStats`. */
export interface ContainerStats {
  attributes: { id: string; metadata: { name: string; attempt: number } | null } | null;
  cpu: { timestamp: number; usage_core_nano_seconds: UInt64Value } | null;
  memory: { timestamp: number; working_set_bytes: UInt64Value } | null;
  writable_layer: FilesystemUsage | null;
}

/** `Container` of ListContainers. */
export interface CriContainer {
  id: string;
  pod_sandbox_id: string;
  metadata: { name: string; attempt: number } | null;
  image: { image: string } | null;
  image_ref: string;
  state: "CONTAINER_CREATED" | "CONTAINER_RUNNING" | "CONTAINER_EXITED" | "CONTAINER_UNKNOWN";
}

/** `PodSandbox` of ListPodSandbox. */
export interface CriPodSandbox {
  id: string;
  metadata: { name: string; uid: string; namespace: string; attempt: number } | null;
  state: "SANDBOX_READY" | "SANDBOX_NOTREADY";
}

/** `Image`. */
export interface CriImage {
  id: string;
  repo_tags: string[];
  repo_digests: string[];
  size: number;
}

/** Result of {@linkcode CriClient.execSync}, with the output decoded as UTF-8. */
export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** `RuntimeCondition`. */
export interface RuntimeCondition {
  type: string;
  status: boolean;
  reason: string;
  message: string;
}

/** Per-call options. */
export interface CriCallOptions {
  /** Deadline from now, in ms (default 60 s). */
  timeoutMs?: number;
}

/** A connected CRI client. */
export interface CriClient {
  version(): Promise<
    { runtime_name: string; runtime_version: string; runtime_api_version: string }
  >;
  status(): Promise<RuntimeCondition[]>;
  runPodSandbox(config: PodSandboxConfig, o?: CriCallOptions): Promise<string>;
  stopPodSandbox(id: string, o?: CriCallOptions): Promise<void>;
  removePodSandbox(id: string, o?: CriCallOptions): Promise<void>;
  listPodSandbox(): Promise<CriPodSandbox[]>;
  createContainer(
    podId: string,
    config: ContainerConfig,
    sandboxConfig: PodSandboxConfig,
    o?: CriCallOptions,
  ): Promise<string>;
  startContainer(id: string, o?: CriCallOptions): Promise<void>;
  /** Stops a container, killing it after `timeoutS` seconds (0: at once). */
  stopContainer(id: string, timeoutS: number, o?: CriCallOptions): Promise<void>;
  removeContainer(id: string, o?: CriCallOptions): Promise<void>;
  listContainers(filter?: { id?: string; pod_sandbox_id?: string }): Promise<CriContainer[]>;
  /** Runs `cmd` in a running container and waits for it (at most `timeoutS`, default 60). */
  execSync(id: string, cmd: string[], timeoutS?: number): Promise<ExecResult>;
  containerStats(id: string): Promise<ContainerStats | null>;
  /** The image, or null when the runtime does not know it. */
  imageStatus(ref: string): Promise<CriImage | null>;
  listImages(): Promise<CriImage[]>;
  imageFsInfo(): Promise<FilesystemUsage[]>;
  /** Closes the channel. */
  close(): void;
}

let rootPromise: Promise<protobuf.Root> | undefined;

/** Parses `runtime_v1.proto` once. */
export function loadCriProto(): Promise<protobuf.Root> {
  rootPromise ??= (async () => {
    const text = await Deno.readTextFile(PROTO_URL);
    const root = new protobuf.Root();
    protobuf.parse(text, root, { keepCase: true });
    root.resolveAll();
    return root;
  })();
  return rootPromise;
}

type Unary = (
  request: unknown,
  metadata: Metadata,
  options: { deadline: number },
  callback: (err: (Error & { code?: number; details?: string }) | null, response?: unknown) => void,
) => unknown;

/** Connects to the CRI at containerd's socket `socketPath`. */
export async function connectCri(socketPath: string): Promise<CriClient> {
  const root = await loadCriProto();
  const definition: Record<string, unknown> = {};
  for (const serviceName of ["RuntimeService", "ImageService"]) {
    const service = root.lookupService(`${CRI_PACKAGE}.${serviceName}`);
    for (const method of service.methodsArray) {
      const req = root.lookupType(method.resolvedRequestType!.fullName);
      const res = root.lookupType(method.resolvedResponseType!.fullName);
      definition[method.name] = {
        path: `/${CRI_PACKAGE}.${serviceName}/${method.name}`,
        requestStream: false,
        responseStream: false,
        requestSerialize: (value: Record<string, unknown>) =>
          Buffer.from(req.encode(req.fromObject(value)).finish()),
        requestDeserialize: (bytes: Buffer) => req.toObject(req.decode(bytes), DECODE),
        responseSerialize: (value: Record<string, unknown>) =>
          Buffer.from(res.encode(res.fromObject(value)).finish()),
        responseDeserialize: (bytes: Buffer) => res.toObject(res.decode(bytes), DECODE),
        originalName: method.name,
      };
    }
  }
  // deno-lint-ignore no-explicit-any
  const Ctor = makeGenericClientConstructor(definition as any, "Cri");
  const client: Client = new Ctor(`unix://${socketPath}`, credentials.createInsecure(), {
    "grpc.max_receive_message_length": 32 * 1024 * 1024,
  });

  function call<T>(method: string, request: unknown, o?: CriCallOptions): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const fn = (client as unknown as Record<string, Unary>)[method].bind(client);
      const deadline = Date.now() + (o?.timeoutMs ?? 60_000);
      fn(request, new Metadata(), { deadline }, (err, response) => {
        if (err) {
          reject(
            new CriCallError(
              `CRI ${method} failed (code ${err.code}): ${err.details ?? err.message}`,
              err.code ?? -1,
              { cause: err },
            ),
          );
        } else resolve(response as T);
      });
    });
  }
  const decoder = new TextDecoder();

  return {
    version: () => call("Version", { version: "v1" }),
    status: async () =>
      (await call<{ status: { conditions: RuntimeCondition[] } | null }>("Status", {}))
        .status?.conditions ?? [],
    runPodSandbox: async (config, o) =>
      (await call<{ pod_sandbox_id: string }>("RunPodSandbox", { config }, o)).pod_sandbox_id,
    stopPodSandbox: async (id, o) => {
      await call("StopPodSandbox", { pod_sandbox_id: id }, o);
    },
    removePodSandbox: async (id, o) => {
      await call("RemovePodSandbox", { pod_sandbox_id: id }, o);
    },
    listPodSandbox: async () =>
      (await call<{ items: CriPodSandbox[] }>("ListPodSandbox", {})).items,
    createContainer: async (podId, config, sandboxConfig, o) =>
      (await call<{ container_id: string }>("CreateContainer", {
        pod_sandbox_id: podId,
        config,
        sandbox_config: sandboxConfig,
      }, o)).container_id,
    startContainer: async (id, o) => {
      await call("StartContainer", { container_id: id }, o);
    },
    stopContainer: async (id, timeoutS, o) => {
      await call("StopContainer", { container_id: id, timeout: timeoutS }, o);
    },
    removeContainer: async (id, o) => {
      await call("RemoveContainer", { container_id: id }, o);
    },
    listContainers: async (filter = {}) =>
      (await call<{ containers: CriContainer[] }>("ListContainers", { filter })).containers,
    execSync: async (id, cmd, timeoutS = 60) => {
      const r = await call<{ stdout: Uint8Array; stderr: Uint8Array; exit_code: number }>(
        "ExecSync",
        { container_id: id, cmd, timeout: timeoutS },
        { timeoutMs: (timeoutS + 30) * 1000 },
      );
      return {
        stdout: decoder.decode(r.stdout),
        stderr: decoder.decode(r.stderr),
        exitCode: r.exit_code,
      };
    },
    containerStats: async (id) =>
      (await call<{ stats: ContainerStats | null }>("ContainerStats", { container_id: id }))
        .stats,
    imageStatus: async (ref) =>
      (await call<{ image: CriImage | null }>("ImageStatus", { image: { image: ref } })).image,
    listImages: async () => (await call<{ images: CriImage[] }>("ListImages", {})).images,
    imageFsInfo: async () =>
      (await call<{ image_filesystems: FilesystemUsage[] }>("ImageFsInfo", {}))
        .image_filesystems,
    close: () => client.close(),
  };
}
