package status

import (
	"fmt"

	"github.com/kiln-project/kiln/firstboot/member"
)

func ExampleStatus_Summary() {
	s := &Status{Hostname: "kiln-1a2b", Phase: PhaseReady, Expected: 3,
		Members: []member.Member{{Alive: true}, {Alive: true}, {Alive: false}},
		Swarm:   Component{State: "manager"}, Gluster: Component{State: "mounted"}, VIPHolder: "kiln-1a2b"}
	fmt.Println(s.Summary())
	// Output: ready kiln-1a2b members=2/3 swarm=manager gluster=mounted vip@kiln-1a2b
}
