package lab

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/kiln-project/kiln/firstboot/config"
)

// nodeConfig is the YAML a lab node reads (format in docs/design.md): through fw_cfg opt/kiln/config on a disk-booted
// node, from kiln pxe serve's --config on a netbooted one. It holds the sections of the user's config, passed
// through untouched (the agent validates them), with ssh_authorized_keys holding the user's keys and the lab's
// own key (pubKey; "" to only validate). A section the agent does not know is refused here already.
func nodeConfig(clusterFile []byte, pubKey string) ([]byte, error) {
	var sections []*yaml.Node // key, value, key, value… in the file's order
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
		hasCluster := false
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			switch {
			case k.Value == "ssh_authorized_keys":
				if err := v.Decode(&keys); err != nil {
					return nil, fmt.Errorf("config: line %d: ssh_authorized_keys: %w", v.Line, err)
				}
			case k.Value == "cluster" && v.Kind != yaml.MappingNode:
				return nil, fmt.Errorf("config: line %d: cluster: want a mapping", v.Line)
			case slices.Contains(config.Sections, k.Value):
				hasCluster = hasCluster || k.Value == "cluster"
				sections = append(sections, k, v)
			default:
				return nil, fmt.Errorf("config: line %d: unknown key %q (want %s)", k.Line, k.Value, strings.Join(config.Sections, ", "))
			}
		}
		if !hasCluster {
			return nil, errors.New("config: no cluster section")
		}
	}
	if pubKey = strings.TrimSpace(pubKey); pubKey != "" {
		keys = append(keys, pubKey)
	}
	var keyList yaml.Node
	if err := keyList.Encode(keys); err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	if keys == nil {
		keyList = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
	}
	out := &yaml.Node{Kind: yaml.MappingNode, Content: append(sections,
		&yaml.Node{Kind: yaml.ScalarNode, Value: "ssh_authorized_keys"}, &keyList)}
	var b bytes.Buffer
	b.WriteString("# kiln lab node configuration. Generated.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	return b.Bytes(), nil
}
