package awsfake

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// ec2Error answers in the EC2 query API's error shape.
func ec2Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>fake</RequestID></Response>",
		esc(code), esc(msg))
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func writeXML(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "text/xml")
	out, err := xml.Marshal(v)
	if err != nil {
		ec2Error(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	_, _ = w.Write(out)
}

// list returns the values of a flattened query list: prefix.1, prefix.2 …
func list(form url.Values, prefix string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := form[prefix+"."+strconv.Itoa(i)]
		if !ok {
			return out
		}
		out = append(out, v[0])
	}
}

// filters returns Filter.N.Name → its values.
func filters(form url.Values) map[string][]string {
	out := map[string][]string{}
	for i := 1; ; i++ {
		p := "Filter." + strconv.Itoa(i)
		name := form.Get(p + ".Name")
		if name == "" {
			return out
		}
		out[name] = list(form, p+".Value")
	}
}

// tagsMatch reports whether tags pass every tag:KEY filter.
func tagsMatch(tags map[string]string, fs map[string][]string) bool {
	for name, vals := range fs {
		if k, ok := strings.CutPrefix(name, "tag:"); ok {
			if v, has := tags[k]; !has || !slices.Contains(vals, v) {
				return false
			}
		}
	}
	return true
}

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

func tagSet(tags map[string]string) []xmlTag {
	var out []xmlTag
	for k, v := range tags {
		out = append(out, xmlTag{k, v})
	}
	slices.SortFunc(out, func(a, b xmlTag) int { return strings.Compare(a.Key, b.Key) })
	return out
}

func (f *Fake) ec2(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		ec2Error(w, http.StatusBadRequest, "InvalidParameterValue", err.Error())
		return
	}
	action := r.Form.Get("Action")
	switch f.fault("ec2:" + action) {
	case "denied":
		ec2Error(w, http.StatusForbidden, "UnauthorizedOperation", "You are not authorized to perform this operation. User: arn:aws:iam::"+
			Account+":user/kiln is not authorized to perform: ec2:"+action)
		return
	case "throttle":
		ec2Error(w, http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded.")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch action {
	case "RegisterImage":
		f.registerImage(w, r.Form)
	case "DescribeImages":
		f.describeImages(w, r.Form)
	case "DescribeSnapshots":
		f.describeSnapshots(w, r.Form)
	case "DeleteSnapshot":
		id := r.Form.Get("SnapshotId")
		if _, ok := f.snapshots[id]; !ok {
			ec2Error(w, http.StatusBadRequest, "InvalidSnapshot.NotFound", "The snapshot '"+id+"' does not exist.")
			return
		}
		delete(f.snapshots, id)
		writeXML(w, struct {
			XMLName xml.Name `xml:"DeleteSnapshotResponse"`
			Return  bool     `xml:"return"`
		}{Return: true})
	case "CreateTags":
		f.createTags(w, r.Form)
	case "DescribeInstances":
		f.describeInstances(w, r.Form)
	case "AssignPrivateIpAddresses":
		f.assignPrivate(w, r.Form)
	case "DescribeNetworkInterfaces":
		f.describeENIs(w, r.Form)
	default:
		ec2Error(w, http.StatusBadRequest, "InvalidAction", "awsfake: the action "+action+" is not faked")
	}
}

func (f *Fake) registerImage(w http.ResponseWriter, form url.Values) {
	im := &Image{Name: form.Get("Name"), Architecture: form.Get("Architecture"), BootMode: form.Get("BootMode"),
		EnaSupport: form.Get("EnaSupport") == "true", ImdsSupport: form.Get("ImdsSupport"),
		RootDevice: form.Get("RootDeviceName"), Tags: map[string]string{}}
	if form.Get("BlockDeviceMapping.1.DeviceName") == im.RootDevice {
		im.SnapshotID = form.Get("BlockDeviceMapping.1.Ebs.SnapshotId")
		im.VolumeType = form.Get("BlockDeviceMapping.1.Ebs.VolumeType")
	}
	for _, old := range f.images {
		if old.Name == im.Name {
			ec2Error(w, http.StatusBadRequest, "InvalidAMIName.Duplicate", "AMI name "+im.Name+" is already in use by AMI "+old.ID)
			return
		}
	}
	s, ok := f.snapshots[im.SnapshotID]
	switch {
	case !ok:
		ec2Error(w, http.StatusBadRequest, "InvalidSnapshot.NotFound", "The snapshot '"+im.SnapshotID+"' does not exist.")
		return
	case s.State != "completed":
		ec2Error(w, http.StatusBadRequest, "IncorrectState", "Snapshot "+s.ID+" is not completed")
		return
	}
	for i := 1; form.Get(fmt.Sprintf("TagSpecification.%d.ResourceType", i)) != ""; i++ {
		p := fmt.Sprintf("TagSpecification.%d.Tag", i)
		for j := 1; form.Get(fmt.Sprintf("%s.%d.Key", p, j)) != ""; j++ {
			im.Tags[form.Get(fmt.Sprintf("%s.%d.Key", p, j))] = form.Get(fmt.Sprintf("%s.%d.Value", p, j))
		}
	}
	im.ID = f.nextID("ami")
	f.images[im.ID] = im
	writeXML(w, struct {
		XMLName xml.Name `xml:"RegisterImageResponse"`
		ImageID string   `xml:"imageId"`
	}{ImageID: im.ID})
}

func (f *Fake) describeImages(w http.ResponseWriter, form url.Values) {
	type ebs struct {
		SnapshotID string `xml:"snapshotId"`
		VolumeType string `xml:"volumeType"`
	}
	type bdm struct {
		DeviceName string `xml:"deviceName"`
		Ebs        ebs    `xml:"ebs"`
	}
	type image struct {
		ImageID      string   `xml:"imageId"`
		Name         string   `xml:"name"`
		State        string   `xml:"imageState"`
		Architecture string   `xml:"architecture"`
		BootMode     string   `xml:"bootMode"`
		EnaSupport   bool     `xml:"enaSupport"`
		ImdsSupport  string   `xml:"imdsSupport"`
		RootDevice   string   `xml:"rootDeviceName"`
		Mappings     []bdm    `xml:"blockDeviceMapping>item"`
		Tags         []xmlTag `xml:"tagSet>item"`
	}
	ids, fs := list(form, "ImageId"), filters(form)
	var out []image
	for _, im := range f.images {
		if (len(ids) > 0 && !slices.Contains(ids, im.ID)) || !tagsMatch(im.Tags, fs) {
			continue
		}
		if names, ok := fs["name"]; ok && !slices.Contains(names, im.Name) {
			continue
		}
		out = append(out, image{ImageID: im.ID, Name: im.Name, State: "available", Architecture: im.Architecture,
			BootMode: im.BootMode, EnaSupport: im.EnaSupport, ImdsSupport: im.ImdsSupport, RootDevice: im.RootDevice,
			Mappings: []bdm{{DeviceName: im.RootDevice, Ebs: ebs{SnapshotID: im.SnapshotID, VolumeType: im.VolumeType}}},
			Tags:     tagSet(im.Tags)})
	}
	slices.SortFunc(out, func(a, b image) int { return strings.Compare(a.ImageID, b.ImageID) })
	writeXML(w, struct {
		XMLName xml.Name `xml:"DescribeImagesResponse"`
		Images  []image  `xml:"imagesSet>item"`
	}{Images: out})
}

func (f *Fake) describeSnapshots(w http.ResponseWriter, form url.Values) {
	type snap struct {
		SnapshotID string   `xml:"snapshotId"`
		Status     string   `xml:"status"`
		VolumeSize int64    `xml:"volumeSize"`
		Progress   string   `xml:"progress"`
		Tags       []xmlTag `xml:"tagSet>item"`
	}
	ids, fs := list(form, "SnapshotId"), filters(form)
	var out []snap
	for _, id := range ids {
		if _, ok := f.snapshots[id]; !ok {
			ec2Error(w, http.StatusBadRequest, "InvalidSnapshot.NotFound", "The snapshot '"+id+"' does not exist.")
			return
		}
	}
	for _, s := range f.snapshots {
		if (len(ids) > 0 && !slices.Contains(ids, s.ID)) || !tagsMatch(s.Tags, fs) {
			continue
		}
		state, progress := s.State, "0%"
		if s.State == "completing" {
			state = "pending"
			if s.polls >= f.PendingPolls {
				s.State, state = "completed", "completed"
			}
			s.polls++
		}
		if state == "completed" {
			progress = "100%"
		}
		out = append(out, snap{SnapshotID: s.ID, Status: state, VolumeSize: s.VolumeSize, Progress: progress, Tags: tagSet(s.Tags)})
	}
	writeXML(w, struct {
		XMLName   xml.Name `xml:"DescribeSnapshotsResponse"`
		Snapshots []snap   `xml:"snapshotSet>item"`
	}{Snapshots: out})
}

func (f *Fake) createTags(w http.ResponseWriter, form url.Values) {
	tags := map[string]string{}
	for i := 1; form.Get(fmt.Sprintf("Tag.%d.Key", i)) != ""; i++ {
		tags[form.Get(fmt.Sprintf("Tag.%d.Key", i))] = form.Get(fmt.Sprintf("Tag.%d.Value", i))
	}
	for _, id := range list(form, "ResourceId") {
		var dst map[string]string
		switch {
		case f.images[id] != nil:
			dst = f.images[id].Tags
		case f.snapshots[id] != nil:
			dst = f.snapshots[id].Tags
		default:
			for _, in := range f.instances {
				if in.ID == id {
					if in.Tags == nil {
						in.Tags = map[string]string{}
					}
					dst = in.Tags
				}
			}
		}
		if dst == nil {
			ec2Error(w, http.StatusBadRequest, "InvalidID", "The ID '"+id+"' is not valid")
			return
		}
		for k, v := range tags {
			dst[k] = v
		}
	}
	writeXML(w, struct {
		XMLName xml.Name `xml:"CreateTagsResponse"`
		Return  bool     `xml:"return"`
	}{Return: true})
}

type xmlPrivateIP struct {
	Address string `xml:"privateIpAddress"`
	Primary bool   `xml:"primary"`
}

func (in *Instance) privateIPs() []xmlPrivateIP {
	out := []xmlPrivateIP{{Address: in.LocalIPv4, Primary: true}}
	for _, a := range in.Secondary {
		out = append(out, xmlPrivateIP{Address: a})
	}
	return out
}

func (f *Fake) describeInstances(w http.ResponseWriter, form url.Values) {
	type eni struct {
		ID      string         `xml:"networkInterfaceId"`
		MAC     string         `xml:"macAddress"`
		Private string         `xml:"privateIpAddress"`
		IPs     []xmlPrivateIP `xml:"privateIpAddressesSet>item"`
	}
	type instance struct {
		ID      string   `xml:"instanceId"`
		Private string   `xml:"privateIpAddress"`
		State   string   `xml:"instanceState>name"`
		Tags    []xmlTag `xml:"tagSet>item"`
		ENIs    []eni    `xml:"networkInterfaceSet>item"`
	}
	type reservation struct {
		ID        string     `xml:"reservationId"`
		Instances []instance `xml:"instancesSet>item"`
	}
	ids, fs := list(form, "InstanceId"), filters(form)
	var res []reservation
	for _, in := range f.instances {
		if (len(ids) > 0 && !slices.Contains(ids, in.ID)) || !tagsMatch(in.Tags, fs) {
			continue
		}
		if states, ok := fs["instance-state-name"]; ok && !slices.Contains(states, in.State) {
			continue
		}
		x := instance{ID: in.ID, Private: in.LocalIPv4, State: in.State, Tags: tagSet(in.Tags)}
		if in.ENI != "" {
			x.ENIs = []eni{{ID: in.ENI, MAC: in.MAC, Private: in.LocalIPv4, IPs: in.privateIPs()}}
		}
		res = append(res, reservation{ID: "r-" + in.ID, Instances: []instance{x}})
	}
	writeXML(w, struct {
		XMLName      xml.Name      `xml:"DescribeInstancesResponse"`
		Reservations []reservation `xml:"reservationSet>item"`
	}{Reservations: res})
}

func (f *Fake) eni(id string) *Instance {
	for _, in := range f.instances {
		if in.ENI == id {
			return in
		}
	}
	return nil
}

// assignPrivate moves addresses to an interface. Like EC2 it refuses an address another interface holds unless
// reassignment is allowed, and then takes it from that interface.
func (f *Fake) assignPrivate(w http.ResponseWriter, form url.Values) {
	id := form.Get("NetworkInterfaceId")
	dst := f.eni(id)
	if dst == nil {
		ec2Error(w, http.StatusBadRequest, "InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '"+id+"' does not exist")
		return
	}
	addrs := list(form, "PrivateIpAddress")
	for _, a := range addrs {
		for _, in := range f.instances {
			if in != dst && (slices.Contains(in.Secondary, a) || in.LocalIPv4 == a) && form.Get("AllowReassignment") != "true" {
				ec2Error(w, http.StatusBadRequest, "PrivateIpAddressLimitExceeded", "Address "+a+" is assigned to "+in.ENI)
				return
			}
		}
	}
	type assigned struct {
		Address string `xml:"privateIpAddress"`
	}
	var out []assigned
	for _, a := range addrs {
		for _, in := range f.instances {
			if in != dst {
				in.Secondary = slices.DeleteFunc(in.Secondary, func(s string) bool { return s == a })
			}
		}
		if !slices.Contains(dst.Secondary, a) {
			dst.Secondary = append(dst.Secondary, a)
		}
		out = append(out, assigned{a})
	}
	writeXML(w, struct {
		XMLName  xml.Name   `xml:"AssignPrivateIpAddressesResponse"`
		ENI      string     `xml:"networkInterfaceId"`
		Assigned []assigned `xml:"assignedPrivateIpAddressesSet>item"`
	}{ENI: id, Assigned: out})
}

func (f *Fake) describeENIs(w http.ResponseWriter, form url.Values) {
	type eni struct {
		ID      string         `xml:"networkInterfaceId"`
		MAC     string         `xml:"macAddress"`
		Private string         `xml:"privateIpAddress"`
		IPs     []xmlPrivateIP `xml:"privateIpAddressesSet>item"`
	}
	var out []eni
	for _, id := range list(form, "NetworkInterfaceId") {
		in := f.eni(id)
		if in == nil {
			ec2Error(w, http.StatusBadRequest, "InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '"+id+"' does not exist")
			return
		}
		out = append(out, eni{ID: in.ENI, MAC: in.MAC, Private: in.LocalIPv4, IPs: in.privateIPs()})
	}
	writeXML(w, struct {
		XMLName xml.Name `xml:"DescribeNetworkInterfacesResponse"`
		ENIs    []eni    `xml:"networkInterfaceSet>item"`
	}{ENIs: out})
}
