package gluster

import (
	"fmt"
	"strings"
)

// ActionKind names one step the reconciler can take against glusterd.
type ActionKind string

// Formation (Plan).
const (
	ActProbe  ActionKind = "probe"
	ActCreate ActionKind = "create"
	ActSet    ActionKind = "set"
	ActStart  ActionKind = "start"
)

// Healing (docs/self-healing.md).
const (
	// ActAdoptUUID: a reimaged node (fresh glusterd, empty pool) takes the UUID the pool knows its address
	// by: stop glusterd, rewrite glusterd.info, write a peer file for every other pool member, start
	// glusterd. It then handshakes with the pool as the member it was and imports the volume.
	ActAdoptUUID ActionKind = "adopt-uuid"
	// ActPrepareBrick: this node hosts a brick of the volume whose directory lacks the volume-id xattr (a
	// reimaged node's empty brick): create it and set trusted.glusterfs.volume-id, which glusterd checks
	// before it starts a brick. Followed by ActStartForce and ActHealFull.
	ActPrepareBrick ActionKind = "prepare-brick"
	// ActStartForce starts the volume's bricks that are not running (`volume start data force`).
	ActStartForce ActionKind = "start-force"
	// ActHeal starts an index heal of the pending entries; ActHealFull a full crawl (an empty brick has
	// no pending markers on the good ones, so only a full heal fills it).
	ActHeal     ActionKind = "heal"
	ActHealFull ActionKind = "heal-full"
	// ActHealOwnBrick is the full heal a prepared empty brick is owed (FullHealOwed), launched once the
	// brick and this node's self-heal daemon are online; a launch clears what is owed.
	ActHealOwnBrick ActionKind = "heal-own-brick"
	// ActReplaceBrick moves a brick of a member gone past cluster.replaceAfter to a newcomer
	// (`replace-brick … commit force`); ActDetach then removes the dead peer from the pool.
	ActReplaceBrick ActionKind = "replace-brick"
	ActDetach       ActionKind = "detach"
	// ActAddBrick grows the replica count by one with a newcomer's brick (after `recover` shrank the
	// volume to the survivor's brick, or on a cluster that started smaller than 3).
	ActAddBrick ActionKind = "add-brick"
	// ActRemoveBricks shrinks the volume to the given replica count, dropping the bricks named
	// (`remove-brick … force`): only `kiln-firstboot recover` does it.
	ActRemoveBricks ActionKind = "remove-bricks"
	// ActResetPeer makes this glusterd a fresh one (state set aside, brick directory set aside): a node
	// from before a `recover` that the new pool does not know.
	ActResetPeer ActionKind = "reset-peer"
	// ActRestartGlusterd restarts this glusterd: after a reimaged node probed back in with its old UUID the
	// handshake stalls ("Accepted peer request" here, "Peer Rejected" on others: it has no volumes); on
	// restart it fetches peers and volumes from the pool (the documented same-UUID procedure).
	ActRestartGlusterd ActionKind = "restart-glusterd"
)

// Action is one step; the plans return them, the reconciler runs them (act).
type Action struct {
	Kind    ActionKind
	Host    string   // probe
	Replica int      // create
	Bricks  []string // create
	// Options are set in one `volume set`: each is a cluster-wide transaction of ~20 s on a loaded TCG lab
	// node, so one per option would add a minute to formation.
	Options []Option
	// Value is the action's one argument: the UUID to adopt, the volume id of a brick to prepare, the epoch.
	Value string
	// Pool is the pool's address → glusterd UUID map without this node (adopt-uuid).
	Pool map[string]string
}

func (a Action) String() string {
	switch a.Kind {
	case ActProbe:
		return "probe " + a.Host
	case ActCreate:
		return fmt.Sprintf("create replica %d %s", a.Replica, strings.Join(a.Bricks, " "))
	case ActSet:
		words := []string{"set"}
		for _, o := range a.Options {
			words = append(words, o.Key, o.Value)
		}
		return strings.Join(words, " ")
	case ActReplaceBrick:
		return "replace-brick " + strings.Join(a.Bricks, " ")
	case ActDetach:
		return "peer detach " + a.Host
	case ActAdoptUUID:
		return "adopt glusterd UUID " + a.Value
	case ActAddBrick:
		return fmt.Sprintf("add-brick replica %d %s", a.Replica, strings.Join(a.Bricks, " "))
	case ActRemoveBricks:
		return fmt.Sprintf("remove-brick replica %d %s force", a.Replica, strings.Join(a.Bricks, " "))
	case ActResetPeer:
		return "reset to a fresh peer (epoch " + a.Value + ")"
	default:
		return string(a.Kind)
	}
}
