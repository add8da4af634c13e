import { it } from "@effect/vitest"
import { Arbitrary, Effect, Schema } from "effect"
import { RefreshError, Session } from "moon-refresh"

const show = (name: string, a: Arbitrary.Arbitrary<unknown>, size = 50) => {
  const xs = Effect.runSync(Arbitrary.sampleEffect(a, { count: 6, seed: 7, size }))
  console.log(name, JSON.stringify(xs).slice(0, 600))
}
it("samples", () => {
  show("token", Arbitrary.schema(Schema.String.check(Schema.isPattern(/^[A-Za-z0-9_-]{12,64}$/))))
  show("uuid", Arbitrary.schema(Schema.String.check(Schema.isUUID())))
  show("email", Arbitrary.schema(Schema.String.check(Schema.isPattern(/^[a-z0-9._+-]{1,20}@[a-z0-9-]{1,20}\.[a-z]{2,6}$/))))
  show("finite", Arbitrary.schema(Schema.Finite))
  show("between", Arbitrary.schema(Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1 }))))
  show("str", Arbitrary.schema(Schema.String.check(Schema.isMaxLength(8))))
  show("unknown", Arbitrary.schema(Schema.Unknown), 10)
  show("supabase", Arbitrary.schema(Session.SupabaseSession), 10)
  show("refresherror", Arbitrary.schema(RefreshError.RefreshError), 10)
  show("headerText", Arbitrary.schema(Schema.String.check(Schema.isPattern(/^[\x20-\x7e]{0,40}$/))))
})
