// The model checker (first half of the schedules): random schedules of two or
// three managers on one store, or of a pool's keys, with store and server
// faults, each checked against every invariant of test/model/invariants.ts.
// A failure prints the shrunk schedule and how to replay it. `npm test` runs
// 2,000 schedules over the two files; `npm run test:model` runs 50,000.
import { describeSchedules } from "./check.js"

describeSchedules(1000)
