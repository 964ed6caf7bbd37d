#!/usr/bin/env bash
# A scripted stand-in for a coding agent's terminal UI, for tests that run the real agentapi
# (github.com/coder/agentapi) in front of it: agentapi types each user message into this
# program's terminal; it "works" for AGENT_WORK_SECONDS (default 1), answers, and waits for the
# next line. agentapi reports `running` while the screen changes and `stable` once it stays put.
printf 'scripted agent ready\n> '
while IFS= read -r line; do
  printf 'working on: %s\n' "$line"
  sleep "${AGENT_WORK_SECONDS:-1}"
  printf 'done: %s\n> ' "$line"
done
