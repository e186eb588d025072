package spec

import (
	"context"
	"fmt"
	"os"

	"github.com/kiln-project/kiln/firstboot/compose"
)

// reservedStacks are the stack names the agent deploys itself.
var reservedStacks = map[string]bool{"kiln-ingress": true}

// validateStacks checks every stack: a name, unique and not kiln's own, and a compose file that compose-go
// loads within the subset kiln deploys; the file's own problems come at its file and line.
func (v *validator) validateStacks() {
	seen := map[string]string{}
	for i, st := range v.spec.Stacks {
		field := fmt.Sprintf("stacks[%d]", i)
		switch err := compose.ValidName(st.Name); {
		case err != nil:
			v.add(field+".name", "%v", err)
		case reservedStacks[st.Name]:
			v.add(field+".name", "%q is the agent's own stack", st.Name)
		case seen[st.Name] != "":
			v.add(field+".name", "%q is also %s", st.Name, seen[st.Name])
		default:
			seen[st.Name] = field
		}
		if !v.path(field+".file", st.File, v.spec.Path(st.File), false) {
			continue
		}
		data, err := os.ReadFile(v.spec.Path(st.File))
		if err != nil {
			v.add(field+".file", "%v", err)
			continue
		}
		if compose.ValidName(st.Name) != nil {
			continue
		}
		if _, err := compose.Load(context.Background(), st.Name, v.spec.Path(st.File), data); err != nil {
			v.errs = append(v.errs, err)
		}
	}
}
