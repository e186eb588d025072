package awsfake

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Role is the instance profile role name IMDS reports; its credentials are fixed fake keys.
const Role = "kiln-node"

// IMDS returns a handler answering IMDS for instance id whatever the request's source address: tests run
// several instances' agents on one loopback address.
func (f *Fake) IMDS(id string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f.imds(w, r, id) })
}

// imds answers IMDSv2: a token from PUT /latest/api/token, then GETs carrying it. Like EC2 with
// HttpTokens=required (what kiln's AMIs ask for), a GET without a valid token is 401. The instance answered
// for is id, else the one whose LocalIPv4 the request comes from, else the only instance there is.
func (f *Fake) imds(w http.ResponseWriter, r *http.Request, id string) {
	if r.URL.Path == "/latest/api/token" {
		f.count("imds:token")
		ttl, err := strconv.Atoi(r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		if r.Method != http.MethodPut || err != nil || ttl < 1 || ttl > 21600 {
			http.Error(w, "token: PUT with X-aws-ec2-metadata-token-ttl-seconds 1..21600", http.StatusBadRequest)
			return
		}
		var b [16]byte
		_, _ = rand.Read(b[:])
		tok := hex.EncodeToString(b[:])
		f.mu.Lock()
		f.tokens[tok] = time.Now().Add(time.Duration(ttl) * time.Second)
		f.mu.Unlock()
		w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", strconv.Itoa(ttl))
		_, _ = w.Write([]byte(tok))
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	name := strings.TrimPrefix(r.URL.Path, "/latest/")
	f.calls["imds:"+name]++
	if exp, ok := f.tokens[r.Header.Get("X-aws-ec2-metadata-token")]; !ok || time.Now().After(exp) {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	in := f.caller(r, id)
	if in == nil {
		http.Error(w, "awsfake: no instance at "+r.RemoteAddr, http.StatusNotFound)
		return
	}
	mac := strings.ToLower(in.MAC)
	var body string
	switch name {
	case "user-data":
		if in.UserData == nil {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(in.UserData)
		return
	case "meta-data/instance-id":
		body = in.ID
	case "meta-data/local-ipv4":
		body = in.LocalIPv4
	case "meta-data/mac":
		body = mac
	case "meta-data/network/interfaces/macs/" + mac + "/interface-id":
		body = in.ENI
	case "meta-data/placement/region":
		body = f.Region
	case "meta-data/iam/security-credentials/":
		body = Role
	case "meta-data/iam/security-credentials/" + Role:
		out, _ := json.Marshal(map[string]any{"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "AKIAFAKEFAKEFAKE",
			"SecretAccessKey": "fake", "Token": "fake", "Expiration": time.Now().Add(6 * time.Hour).UTC().Format(time.RFC3339),
			"LastUpdated": time.Now().UTC().Format(time.RFC3339)})
		body = string(out)
	default:
		http.NotFound(w, r)
		return
	}
	_, _ = w.Write([]byte(body))
}

func (f *Fake) count(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[name]++
}

// caller is the instance a request comes from (f.mu held).
func (f *Fake) caller(r *http.Request, id string) *Instance {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	for _, in := range f.instances {
		if (id != "" && in.ID == id) || (id == "" && in.LocalIPv4 == host) {
			return in
		}
	}
	if len(f.instances) == 1 {
		return f.instances[0]
	}
	return nil
}
