//! What Shoal's Kubernetes node image carries (`images/build-kubernetes-image.sh`,
//! versions in `images/kubernetes/versions.env`): the names the rendered kubeadm
//! configuration must use for the image's preloaded containers, its container
//! runtime and its paths. A test keeps these equal to `versions.env`.

/// The contents of a Shoal Kubernetes node image that kubeadm's configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeImage {
    /// The Kubernetes version the image's binaries and control-plane images are.
    pub kubernetes_version: &'static str,
    /// The repository every preloaded image is named under (never pulled from).
    pub image_repository: &'static str,
    /// The tag of the preloaded etcd image.
    pub etcd_image_tag: &'static str,
    /// The tag of the preloaded CoreDNS image.
    pub coredns_image_tag: &'static str,
    /// The tag of the preloaded flannel image.
    pub flannel_image_tag: &'static str,
    /// The container runtime's CRI socket.
    pub cri_socket: &'static str,
    /// The kernel command line a direct kernel boot of the image needs.
    pub kernel_cmdline: &'static str,
    /// The image directory's files: kernel, initrd and root disk.
    pub kernel_file: &'static str,
    /// The initramfs file in the image directory.
    pub initrd_file: &'static str,
    /// The qcow2 root disk in the image directory.
    pub disk_file: &'static str,
}

impl NodeImage {
    /// The full reference of preloaded image `name` with `tag`.
    pub fn image(&self, name: &str, tag: &str) -> String {
        format!("{}/{name}:{tag}", self.image_repository)
    }
}

/// The node image `images/build-kubernetes-image.sh` builds.
pub const NODE_IMAGE: NodeImage = NodeImage {
    kubernetes_version: "1.35.4",
    image_repository: "shoal.local/k8s",
    etcd_image_tag: "3.6.5-0",
    coredns_image_tag: "v1.13.1",
    flannel_image_tag: "v0.28.10",
    cri_socket: "unix:///run/containerd/containerd.sock",
    kernel_cmdline: "root=LABEL=shoal-root rw console=ttyS0 net.ifnames=0",
    kernel_file: "vmlinuz",
    initrd_file: "initrd.img",
    disk_file: "disk.qcow2",
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn versions_env() -> BTreeMap<String, String> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../images/kubernetes/versions.env"
        );
        let text = std::fs::read_to_string(path).expect("images/kubernetes/versions.env");
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    }

    #[test]
    fn matches_what_the_image_build_uses() {
        let env = versions_env();
        let get = |k: &str| env.get(k).map(String::as_str).expect(k);
        assert_eq!(
            format!("v{}", NODE_IMAGE.kubernetes_version),
            get("KUBERNETES_VERSION")
        );
        assert_eq!(NODE_IMAGE.image_repository, get("IMAGE_REPOSITORY"));
        assert_eq!(
            NODE_IMAGE.etcd_image_tag,
            format!("{}-0", get("ETCD_VERSION"))
        );
        assert_eq!(NODE_IMAGE.coredns_image_tag, get("COREDNS_VERSION"));
        assert_eq!(NODE_IMAGE.flannel_image_tag, get("FLANNEL_VERSION"));
    }

    #[test]
    fn kernel_command_line_and_files_match_the_build_script() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../images/build-kubernetes-image.sh"
        );
        let script = std::fs::read_to_string(path).expect("images/build-kubernetes-image.sh");
        let cmdline = script
            .lines()
            .find_map(|l| l.strip_prefix("kernel_cmdline="))
            .expect("the script sets kernel_cmdline");
        assert_eq!(cmdline.trim_matches('"'), NODE_IMAGE.kernel_cmdline);
        for file in [
            NODE_IMAGE.kernel_file,
            NODE_IMAGE.initrd_file,
            NODE_IMAGE.disk_file,
        ] {
            assert!(
                script.contains(&format!("\"{file}\"")),
                "the manifest names {file}"
            );
        }
    }

    #[test]
    fn image_references() {
        assert_eq!(
            NODE_IMAGE.image("flannel", NODE_IMAGE.flannel_image_tag),
            "shoal.local/k8s/flannel:v0.28.10"
        );
    }
}
