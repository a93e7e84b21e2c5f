/**
 * containerd settings for the CRI plugin in the end-to-end CRI test: the one line the README
 * gives Kubernetes users (`snapshotter = "<name>"` under
 * `[plugins."io.containerd.grpc.v1.cri".containerd]`) plus what a node without network needs:
 * a local `sandbox_image`, CNI directories of its own (host-network pods need no CNI plugin,
 * but the plugin watches its config directory and would create `/etc/cni/net.d` on the host)
 * and a short `stats_collect_period`, so the snapshot usage CRI caches is fresh within a
 * second instead of ten.
 *
 * @module
 */

/** Plugin id of containerd's CRI plugin. */
export const CRI_PLUGIN = "io.containerd.grpc.v1.cri";

/** containerd namespace the CRI plugin keeps its images, containers and snapshots in. */
export const CRI_NAMESPACE = "k8s.io";

/** Options for {@linkcode criPluginSettings}. */
export interface CriSettingsOptions {
  /** Snapshotter name CRI uses for every pod (a proxy plugin's name or `devmapper`). */
  snapshotter: string;
  /** The pod sandbox image (already imported into {@linkcode CRI_NAMESPACE}). */
  sandboxImage: string;
  /** Directory for CNI's (empty) bin and config directories. */
  dir: string;
  /** Seconds between two refreshes of CRI's snapshot usage cache (default 1). */
  statsCollectPeriodS?: number;
}

/** `[plugins."io.containerd.grpc.v1.cri"]` for containerd's config (version 2 schema). */
export function criPluginSettings(
  options: CriSettingsOptions,
): Record<string, Record<string, unknown>> {
  return {
    [CRI_PLUGIN]: {
      sandbox_image: options.sandboxImage,
      stats_collect_period: options.statsCollectPeriodS ?? 1,
      containerd: { snapshotter: options.snapshotter },
      cni: { bin_dir: `${options.dir}/cni/bin`, conf_dir: `${options.dir}/cni/net.d` },
    },
  };
}
