package lab

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// nodeConfig is the YAML a lab node reads (format in docs/design.md): through fw_cfg opt/kiln/config on a disk-booted
// node, from kiln pxe serve's --config on a netbooted one. It holds the cluster section
// of the user's config, passed through untouched (the agent validates it), plus ssh_authorized_keys with the
// user's keys and the lab's own key (pubKey; "" to only validate).
func nodeConfig(clusterFile []byte, pubKey string) ([]byte, error) {
	var cluster *yaml.Node
	var keys []string
	if len(bytes.TrimSpace(clusterFile)) > 0 {
		var doc yaml.Node
		if err := yaml.Unmarshal(clusterFile, &doc); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
			return nil, errors.New("config: want a YAML mapping with a cluster section")
		}
		m := doc.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			switch k.Value {
			case "cluster":
				if v.Kind != yaml.MappingNode {
					return nil, fmt.Errorf("config: line %d: cluster: want a mapping", v.Line)
				}
				cluster = v
			case "ssh_authorized_keys":
				if err := v.Decode(&keys); err != nil {
					return nil, fmt.Errorf("config: line %d: ssh_authorized_keys: %w", v.Line, err)
				}
			default:
				return nil, fmt.Errorf("config: line %d: unknown key %q (want cluster, ssh_authorized_keys)", k.Line, k.Value)
			}
		}
		if cluster == nil {
			return nil, errors.New("config: no cluster section")
		}
	}
	if pubKey = strings.TrimSpace(pubKey); pubKey != "" {
		keys = append(keys, pubKey)
	}
	out := struct {
		Cluster *yaml.Node `yaml:"cluster,omitempty"`
		Keys    []string   `yaml:"ssh_authorized_keys"`
	}{cluster, keys}
	var b bytes.Buffer
	b.WriteString("# kiln lab node configuration. Generated.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	return b.Bytes(), nil
}
