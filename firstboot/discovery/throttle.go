package discovery

import (
	"sync"
	"time"
)

// maxThrottled bounds how many keys a throttle remembers. Its keys come off the network (source addresses of
// beacons and gossip that failed to authenticate), so anyone on the LAN can mint new ones: memory must not
// grow with them.
const maxThrottled = 1024

// throttle lets each key act at most once per every. It forgets keys whose last act is older than that and
// remembers at most maxThrottled: when that many keys acted within one period (a flood from spoofed sources)
// a new key is refused until old ones age out. Safe for concurrent use.
type throttle struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
}

func newThrottle(every time.Duration) *throttle {
	return &throttle{every: every, last: map[string]time.Time{}}
}

// allow reports whether key may act at now, and if so records it.
func (t *throttle) allow(key string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l, ok := t.last[key]; ok && now.Sub(l) < t.every {
		return false
	}
	if len(t.last) >= maxThrottled {
		for k, l := range t.last {
			if now.Sub(l) >= t.every {
				delete(t.last, k)
			}
		}
		if len(t.last) >= maxThrottled {
			return false
		}
	}
	t.last[key] = now
	return true
}

// size is how many keys the throttle remembers (tests).
func (t *throttle) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.last)
}
