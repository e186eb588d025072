package discovery

// memberlist's NotifyMsg does not say who sent a message, so every reliable message starts with the
// sender's id: len uint8 | id | body. The channel is encrypted and authenticated with the cluster key, so
// the claim is as trustworthy as the key holders.

func envelope(from string, body []byte) []byte {
	out := make([]byte, 0, 1+len(from)+len(body))
	out = append(out, byte(len(from)))
	out = append(out, from...)
	return append(out, body...)
}

func splitEnvelope(b []byte) (from string, body []byte, ok bool) {
	if len(b) < 1 {
		return "", nil, false
	}
	n := int(b[0])
	if len(b) < 1+n {
		return "", nil, false
	}
	from = string(b[1 : 1+n])
	if validID(from) != nil {
		return "", nil, false
	}
	return from, append([]byte(nil), b[1+n:]...), true
}
