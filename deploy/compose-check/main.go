// compose-check loads a compose file with the Compose specification's reference loader
// (compose-go) for one set of profiles, the way `docker compose` does, and prints the resolved
// project as JSON: services with their commands, environment, ports, health checks and
// dependencies. It exits non-zero with the loader's own message when the file is invalid.
//
//	compose-check -f compose/compose.yaml --env-file compose/.env.example --profile failover
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type profiles []string

func (p *profiles) String() string     { return strings.Join(*p, ",") }
func (p *profiles) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	file := flag.String("f", "compose.yaml", "compose file")
	envFile := flag.String("env-file", "", "environment file (as docker compose --env-file)")
	var active profiles
	flag.Var(&active, "profile", "profile to enable (repeatable)")
	flag.Parse()

	opts := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(filepath.Dir(*file)),
		cli.WithProfiles(active),
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
	}
	if *envFile != "" {
		opts = append(opts, cli.WithEnvFiles(*envFile), cli.WithDotEnv)
	}
	// Only the env file's values: the caller's environment must not change the result.
	options, err := cli.NewProjectOptions([]string{*file}, opts...)
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	var decoded any
	if err := json.Unmarshal(out, &decoded); err != nil {
		fail(err)
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	if err := encoder.Encode(decoded); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "compose-check:", err)
	os.Exit(1)
}
