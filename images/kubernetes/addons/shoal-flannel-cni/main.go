// Command flannel is the CNI plugin of Shoal's node image for flannel's pod network.
//
// flanneld leases each node a subnet of the cluster's pod network and writes it to
// /run/flannel/subnet.env. On ADD this plugin turns that lease into a configuration
// for the standard bridge plugin (host-local addresses from the node's subnet, a
// route to the whole pod network, flannel's MTU), keeps that configuration for the
// container, and delegates to bridge. DEL and CHECK reuse the kept configuration, so
// they work even after the lease changed.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

const (
	defaultSubnetFile = "/run/flannel/subnet.env"
	defaultStateDir   = "/var/lib/cni/shoal-flannel"
	delegateType      = "bridge"
)

// netConf is the plugin's own configuration in the conflist.
type netConf struct {
	types.NetConf
	SubnetFile string `json:"subnetFile,omitempty"`
	StateDir   string `json:"stateDir,omitempty"`
	Bridge     string `json:"bridge,omitempty"`
}

// lease is what flanneld wrote for this node.
type lease struct {
	network *net.IPNet
	subnet  *net.IPNet
	mtu     int
	ipMasq  bool
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: add, Del: del, Check: check},
		version.All, "Shoal's flannel CNI plugin")
}

func loadConf(raw []byte) (*netConf, error) {
	conf := &netConf{}
	if err := json.Unmarshal(raw, conf); err != nil {
		return nil, fmt.Errorf("the network configuration is not JSON: %w", err)
	}
	if conf.SubnetFile == "" {
		conf.SubnetFile = defaultSubnetFile
	}
	if conf.StateDir == "" {
		conf.StateDir = defaultStateDir
	}
	if conf.Bridge == "" {
		conf.Bridge = "cni0"
	}
	return conf, nil
}

func readLease(path string) (*lease, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("flanneld has not leased this node a subnet yet (%w): is the flannel DaemonSet running?", err)
	}
	defer f.Close()
	l := &lease{}
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		key, value, ok := strings.Cut(strings.TrimSpace(scanner.Text()), "=")
		if !ok {
			continue
		}
		switch key {
		case "FLANNEL_NETWORK":
			_, l.network, err = net.ParseCIDR(value)
		case "FLANNEL_SUBNET":
			_, l.subnet, err = net.ParseCIDR(value)
		case "FLANNEL_MTU":
			l.mtu, err = strconv.Atoi(value)
		case "FLANNEL_IPMASQ":
			l.ipMasq, err = strconv.ParseBool(value)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s=%q: %w", path, key, value, err)
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if l.network == nil || l.subnet == nil || l.mtu == 0 {
		return nil, fmt.Errorf("%s lacks FLANNEL_NETWORK, FLANNEL_SUBNET or FLANNEL_MTU", path)
	}
	return l, nil
}

// delegateConf is the bridge plugin's configuration for one container.
func delegateConf(conf *netConf, l *lease) ([]byte, error) {
	return json.Marshal(map[string]any{
		"cniVersion":       conf.CNIVersion,
		"name":             conf.Name,
		"type":             delegateType,
		"bridge":           conf.Bridge,
		"mtu":              l.mtu,
		"isDefaultGateway": true,
		"hairpinMode":      true,
		// flanneld masquerades traffic that leaves the pod network itself.
		"ipMasq": !l.ipMasq,
		"ipam": map[string]any{
			"type":   "host-local",
			"ranges": [][]map[string]string{{{"subnet": l.subnet.String()}}},
			"routes": []map[string]string{{"dst": l.network.String()}},
		},
	})
}

func statePath(conf *netConf, containerID string) string {
	return filepath.Join(conf.StateDir, containerID)
}

func add(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	l, err := readLease(conf.SubnetFile)
	if err != nil {
		return err
	}
	raw, err := delegateConf(conf, l)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(conf.StateDir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(statePath(conf, args.ContainerID), raw, 0o600); err != nil {
		return err
	}
	result, err := invoke.DelegateAdd(context.Background(), delegateType, raw, nil)
	if err != nil {
		return err
	}
	return types.PrintResult(result, conf.CNIVersion)
}

func del(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	path := statePath(conf, args.ContainerID)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		// Never added, or already deleted: DEL must succeed.
		return nil
	}
	if err != nil {
		return err
	}
	if err := invoke.DelegateDel(context.Background(), delegateType, raw, nil); err != nil {
		return err
	}
	return os.Remove(path)
}

func check(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(statePath(conf, args.ContainerID))
	if err != nil {
		return fmt.Errorf("no kept configuration for container %s: %w", args.ContainerID, err)
	}
	return invoke.DelegateCheck(context.Background(), delegateType, raw, nil)
}
