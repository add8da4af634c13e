#!/usr/bin/env node
/**
 * `npx moon-mock-server`: a Moon-compatible server on 127.0.0.1 to run a
 * program against; `--help` lists its options. See docs/07-testing.md.
 *
 * @since 0.3.0
 */
import { main } from "../testing/internal/mockServerCli.js"

main(process.argv.slice(2))
