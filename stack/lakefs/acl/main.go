// Command acl is lakeFS's open-source ACL server, built unchanged from its upstream module.
package main

import "github.com/treeverse/lakefs/contrib/auth/acl/cmd/acl/cmd"

func main() {
	cmd.Execute()
}
