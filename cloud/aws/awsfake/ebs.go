package awsfake

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ebsError answers in restJson1's error shape (the SDK reads X-Amzn-ErrorType, then __type).
func ebsError(w http.ResponseWriter, status int, typ, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", typ)
	w.WriteHeader(status)
	body := map[string]string{"__type": typ, "Message": msg}
	if reason != "" {
		body["Reason"] = reason
	}
	_ = json.NewEncoder(w).Encode(body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *Fake) ebs(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var action string
	switch {
	case r.Method == http.MethodPost && len(parts) == 1:
		action = "StartSnapshot"
	case r.Method == http.MethodPost && len(parts) == 3 && parts[1] == "completion":
		action = "CompleteSnapshot"
	case r.Method == http.MethodPut && len(parts) == 4 && parts[2] == "blocks":
		action = "PutSnapshotBlock"
	case r.Method == http.MethodGet && len(parts) == 3 && parts[2] == "blocks":
		action = "ListSnapshotBlocks"
	case r.Method == http.MethodGet && len(parts) == 4 && parts[2] == "blocks":
		action = "GetSnapshotBlock"
	default:
		ebsError(w, http.StatusNotFound, "ValidationException", "", "awsfake: no EBS action "+r.Method+" "+r.URL.Path)
		return
	}
	switch f.fault("ebs:" + action) {
	case "denied":
		ebsError(w, http.StatusForbidden, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT",
			"User: arn:aws:iam::"+Account+":user/kiln is not authorized to perform: ebs:"+action)
		return
	case "throttle":
		ebsError(w, http.StatusTooManyRequests, "RequestThrottledException", "ACCOUNT_THROTTLED", "Rate exceeded")
		return
	}
	switch action {
	case "StartSnapshot":
		f.startSnapshot(w, r)
	case "CompleteSnapshot":
		f.completeSnapshot(w, r, parts[2])
	case "PutSnapshotBlock":
		f.putBlock(w, r, parts[1], parts[3])
	case "ListSnapshotBlocks":
		f.listBlocks(w, r, parts[1])
	case "GetSnapshotBlock":
		f.getBlock(w, r, parts[1], parts[3])
	}
}

type tag struct{ Key, Value string }

func (f *Fake) startSnapshot(w http.ResponseWriter, r *http.Request) {
	var in struct {
		VolumeSize  int64
		Description string
		Tags        []tag
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		ebsError(w, http.StatusBadRequest, "ValidationException", "INVALID_PARAMETER_VALUE", "body: "+err.Error())
		return
	}
	if in.VolumeSize < 1 || in.VolumeSize > 64<<10 {
		ebsError(w, http.StatusBadRequest, "ValidationException", "INVALID_VOLUME_SIZE", fmt.Sprintf("volume size %d GiB", in.VolumeSize))
		return
	}
	f.mu.Lock()
	s := &Snapshot{ID: f.nextID("snap"), VolumeSize: in.VolumeSize, Description: in.Description, State: "pending",
		Tags: map[string]string{}, Blocks: map[int32][]byte{}, digests: map[int32][sha256.Size]byte{}}
	for _, t := range in.Tags {
		s.Tags[t.Key] = t.Value
	}
	f.snapshots[s.ID] = s
	f.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"SnapshotId": s.ID, "OwnerId": Account, "Status": "pending",
		"VolumeSize": s.VolumeSize, "BlockSize": BlockSize, "StartTime": time.Now().Unix(), "Description": s.Description,
		"Tags": in.Tags})
}

// snapshot returns the snapshot or answers the not-found error.
func (f *Fake) snapshot(w http.ResponseWriter, id string) (*Snapshot, bool) {
	s, ok := f.snapshots[id]
	if !ok {
		ebsError(w, http.StatusNotFound, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", "The snapshot '"+id+"' does not exist.")
	}
	return s, ok
}

func (f *Fake) putBlock(w http.ResponseWriter, r *http.Request, id, idx string) {
	data, err := readBlock(r.Body)
	if err != nil {
		ebsError(w, http.StatusBadRequest, "ValidationException", "INVALID_BLOCK", "body: "+err.Error())
		return
	}
	// Hashed before taking the lock: the workers' blocks are checked in parallel, as EBS checks them.
	digest := sha256.Sum256(data)
	checksum := base64.StdEncoding.EncodeToString(digest[:])
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.notFound > 0 {
		f.notFound--
		ebsError(w, http.StatusNotFound, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", "The snapshot '"+id+"' does not exist.")
		return
	}
	s, ok := f.snapshot(w, id)
	if !ok {
		return
	}
	n, err := strconv.ParseInt(idx, 10, 32)
	switch {
	case s.State != "pending":
		ebsError(w, http.StatusBadRequest, "ValidationException", "INVALID_SNAPSHOT_ID", "snapshot "+id+" is "+s.State)
	case err != nil || n < 0 || n >= s.VolumeSize<<30/BlockSize:
		ebsError(w, http.StatusBadRequest, "ValidationException", "INVALID_BLOCK", "block index "+idx+" out of range")
	case len(data) != BlockSize || r.Header.Get("x-amz-Data-Length") != strconv.Itoa(BlockSize):
		ebsError(w, http.StatusBadRequest, "ValidationException", "INVALID_BLOCK", fmt.Sprintf("block of %d bytes (length header %q), want %d",
			len(data), r.Header.Get("x-amz-Data-Length"), BlockSize))
	case r.Header.Get("x-amz-Checksum-Algorithm") != "SHA256" || r.Header.Get("x-amz-Checksum") != checksum:
		ebsError(w, http.StatusBadRequest, "ValidationException", "INVALID_BLOCK", "checksum does not match the block")
	default:
		s.Blocks[int32(n)] = data
		s.digests[int32(n)] = digest
		w.Header().Set("x-amz-Checksum", checksum)
		w.Header().Set("x-amz-Checksum-Algorithm", "SHA256")
		w.WriteHeader(http.StatusCreated)
	}
}

// readBlock reads a block body into one buffer of its final size (io.ReadAll would grow and copy it a dozen
// times); a body longer than a block comes back one byte longer, for the length check to refuse.
func readBlock(body io.Reader) ([]byte, error) {
	data := make([]byte, BlockSize+1)
	n, err := io.ReadFull(body, data)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return data[:n:n], nil
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(h[:])
}

func (f *Fake) completeSnapshot(w http.ResponseWriter, r *http.Request, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.snapshot(w, id)
	if !ok {
		return
	}
	if s.State != "pending" {
		ebsError(w, http.StatusBadRequest, "ValidationException", "INVALID_SNAPSHOT_ID", "snapshot "+id+" is "+s.State)
		return
	}
	idx := make([]int32, 0, len(s.Blocks))
	for i := range s.Blocks {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	var digests bytes.Buffer
	for _, i := range idx {
		d := s.digests[i]
		digests.Write(d[:])
	}
	count := r.Header.Get("x-amz-ChangedBlocksCount")
	switch {
	case count != strconv.Itoa(len(s.Blocks)):
		s.State = "error"
		ebsError(w, http.StatusBadRequest, "ValidationException", "INVALID_PARAMETER_VALUE", fmt.Sprintf("changed blocks %s, the snapshot holds %d", count, len(s.Blocks)))
	case r.Header.Get("x-amz-Checksum-Aggregation-Method") != "LINEAR" || r.Header.Get("x-amz-Checksum-Algorithm") != "SHA256" ||
		r.Header.Get("x-amz-Checksum") != sum(digests.Bytes()):
		s.State = "error"
		ebsError(w, http.StatusBadRequest, "ValidationException", "INVALID_PARAMETER_VALUE", "aggregate checksum does not match the blocks")
	default:
		s.State = "completing"
		writeJSON(w, http.StatusAccepted, map[string]string{"Status": "pending"})
	}
}

func (f *Fake) listBlocks(w http.ResponseWriter, r *http.Request, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.snapshot(w, id)
	if !ok {
		return
	}
	if s.State != "completed" {
		ebsError(w, http.StatusBadRequest, "ValidationException", "INVALID_SNAPSHOT_ID", "snapshot "+id+" is "+s.State)
		return
	}
	start, _ := strconv.Atoi(r.URL.Query().Get("startingBlockIndex"))
	if t := r.URL.Query().Get("pageToken"); t != "" {
		start, _ = strconv.Atoi(t)
	}
	max, _ := strconv.Atoi(r.URL.Query().Get("maxResults"))
	if max <= 0 || max > 10000 {
		max = 10000
	}
	var idx []int32
	for i := range s.Blocks {
		if int(i) >= start {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	out := map[string]any{"VolumeSize": s.VolumeSize, "BlockSize": BlockSize, "ExpiryTime": time.Now().Add(time.Hour).Unix()}
	if len(idx) > max {
		out["NextToken"] = strconv.Itoa(int(idx[max]))
		idx = idx[:max]
	}
	blocks := []map[string]any{}
	for _, i := range idx {
		blocks = append(blocks, map[string]any{"BlockIndex": i, "BlockToken": "tok-" + strconv.Itoa(int(i))})
	}
	out["Blocks"] = blocks
	writeJSON(w, http.StatusOK, out)
}

func (f *Fake) getBlock(w http.ResponseWriter, r *http.Request, id, idx string) {
	f.mu.Lock()
	s, ok := f.snapshot(w, id)
	if !ok {
		f.mu.Unlock()
		return
	}
	n, _ := strconv.ParseInt(idx, 10, 32)
	data, ok := s.Blocks[int32(n)]
	f.mu.Unlock()
	if !ok || r.URL.Query().Get("blockToken") != "tok-"+idx {
		ebsError(w, http.StatusBadRequest, "ValidationException", "INVALID_BLOCK_TOKEN", "no block "+idx+" with that token")
		return
	}
	w.Header().Set("x-amz-Data-Length", strconv.Itoa(len(data)))
	w.Header().Set("x-amz-Checksum", sum(data))
	w.Header().Set("x-amz-Checksum-Algorithm", "SHA256")
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(data)
}
