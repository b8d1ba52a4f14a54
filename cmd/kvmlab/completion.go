package main

import (
	"flag"
	"os"

	"kvmlab/internal/cli"
)

const completionUsage = `Usage: kvmlab completion bash|zsh

Print a script that teaches the shell to complete kvmlab's commands and
their flags (internal ones left out). It is generated from the flag sets
the commands parse, so it knows every flag of this kvmlab binary.

  bash:  source <(kvmlab completion bash)     (e.g. in ~/.bashrc)
  zsh:   source <(kvmlab completion zsh)      (after compinit, e.g. in ~/.zshrc)
         or: kvmlab completion zsh > "${fpath[1]}/_kvmlab"
`

func cmdCompletion(args []string) error {
	fset := flag.NewFlagSet("completion", flag.ContinueOnError)
	setUsage(fset, completionUsage)
	if help, err := parseFlags(fset, args, true); help || err != nil {
		return err
	}
	if fset.NArg() != 1 {
		return usagef("completion: name one shell, bash or zsh: e.g. source <(kvmlab completion bash)")
	}
	var cmds []cli.Command
	for _, c := range commandTable() {
		cmds = append(cmds, cli.Command{Name: c.name, Summary: c.summary, Flags: cli.FlagSetOf(c.run), Words: c.words})
	}
	switch fset.Arg(0) {
	case "bash":
		return cli.WriteBash(os.Stdout, "kvmlab", cmds)
	case "zsh":
		return cli.WriteZsh(os.Stdout, "kvmlab", cmds)
	}
	return usagef("completion: %q: kvmlab writes completion for bash and zsh", fset.Arg(0))
}
