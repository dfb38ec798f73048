// Command lakefs is the lakeFS server, built unchanged from its upstream module.
package main

import "github.com/treeverse/lakefs/cmd/lakefs/cmd"

func main() {
	cmd.Execute()
}
