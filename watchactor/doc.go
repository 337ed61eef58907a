// Package watchactor serves etcd's Watch service: it turns the revisions
// the node has applied into revision-ordered watch streams.
package watchactor
