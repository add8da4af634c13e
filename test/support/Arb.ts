/**
 * The few generators the tests build their random inputs from, in fast-check's
 * words (`constant`, `constantFrom`, `nat`, `integer`, `boolean`, `oneof` with
 * weights, `record`, `array`), on Effect's own `Arbitrary` (Effect 4 no longer
 * ships fast-check). Each shrinks the way fast-check's does: a choice toward
 * its first alternative, a number toward its lower bound (toward 0 when 0 is
 * in range), an array by dropping elements.
 */
import { Arbitrary, Effect, Schema } from "effect"

export type Arb<A> = Arbitrary.Arbitrary<A>

const range = (n: number): Array<number> => Array.from({ length: n }, (_, i) => i)

/**
 * A position in `[0, n)`, each as likely as any other (no bias toward the
 * ends), that shrinks to the positions `shrinkTo` gives.
 */
const position = (n: number, shrinkTo: (i: number) => ReadonlyArray<number>): Arb<number> => {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`Arb: ${n} alternatives`)
  if (n === 1) return Arbitrary.Constant(0)
  const [first, ...rest] = range(n)
  return Arbitrary.schema(Schema.Literals([first!, ...rest]), { shrink: shrinkTo })
}

/** Always `value`. */
export const constant = <const A>(value: A): Arb<A> => Arbitrary.Constant(value)

/** `true` or `false`; shrinks to `false`. */
export const boolean = (): Arb<boolean> => Arbitrary.map(position(2, (i) => (i === 0 ? [] : [0])), (i) => i === 1)

/** An integer from `min` to `max`, both included; the bounds a little more often, as fast-check does. */
export const integer = (options: { readonly min: number; readonly max: number }): Arb<number> =>
  options.min === options.max
    ? Arbitrary.Constant(options.min)
    : Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum: options.min, maximum: options.max })))

/** An integer from 0 to `max` (to 2^31 - 1 when not given). */
export const nat = (options: { readonly max?: number | undefined } = {}): Arb<number> =>
  integer({ min: 0, max: options.max ?? 0x7fffffff })

/** One of `values`, each as likely (a value listed twice is twice as likely); shrinks toward the first. */
export const constantFrom = <const Values extends ReadonlyArray<unknown>>(...values: Values): Arb<Values[number]> => {
  const firstAt = values.map((value) => values.indexOf(value))
  return Arbitrary.map(
    position(values.length, (i) => [...new Set(firstAt.slice(0, i))].filter((j) => j < firstAt[i]!)),
    (i) => values[i]
  )
}

/** An alternative of `oneof`, chosen in proportion to its weight. */
export interface Weighted<A> {
  readonly weight: number
  readonly arbitrary: Arb<A>
}

/** The values of an alternative of `oneof`. */
export type ValueOf<Alternative> = Alternative extends Weighted<infer A> ? A
  : Alternative extends Arb<infer A> ? A
  : never

/**
 * A value of one of `alternatives`, each chosen in proportion to its weight
 * (1 for a bare `Arb`); shrinks toward the first alternative, then within the
 * one chosen.
 */
export const oneof = <const Alternatives extends ReadonlyArray<Arb<any> | Weighted<any>>>(
  ...alternatives: Alternatives
): Arb<ValueOf<Alternatives[number]>> => {
  type A = ValueOf<Alternatives[number]>
  const weighted = alternatives.map((alternative): Weighted<A> =>
    Arbitrary.isArbitrary(alternative) ? { weight: 1, arbitrary: alternative as Arb<A> } : alternative as Weighted<A>
  )
  // One slot per unit of weight; an alternative's first slot stands for it when shrinking.
  const slots: Array<number> = []
  const firstSlot: Array<number> = []
  weighted.forEach(({ weight }, i) => {
    if (!Number.isInteger(weight) || weight < 1) throw new RangeError(`Arb.oneof: weight ${weight}`)
    firstSlot.push(slots.length)
    for (let k = 0; k < weight; k++) slots.push(i)
  })
  return Arbitrary.flatMap(
    position(slots.length, (slot) => firstSlot.slice(0, slots[slot]!)),
    (slot) => weighted[slots[slot]!]!.arbitrary
  )
}

/** A record whose every field comes from its own `Arb`. */
export const record = <const Fields extends Record<string, Arb<any>>>(
  fields: Fields
): Arb<{ -readonly [K in keyof Fields]: Fields[K] extends Arb<infer A> ? A : never }> => Arbitrary.all(fields) as any

/**
 * An array of up to `maxLength` items. How long the arrays get also depends on
 * the `size` of the check or sample (Effect's `Arbitrary` grows it from 0 over
 * a check's runs): give a size of at least `maxLength`.
 */
export const array = <A>(item: Arb<A>, options: { readonly maxLength: number }): Arb<Array<A>> =>
  Arbitrary.array(item, { maxLength: options.maxLength })

/**
 * `count` values of `self` from `seed`, at `size` (see `array`), as
 * fast-check's `sample` gave them: synchronously, the same ones every time.
 */
export const sample = <A>(
  self: Arb<A>,
  options: { readonly seed: number; readonly count: number; readonly size?: number | undefined }
): ReadonlyArray<A> => Effect.runSync(Arbitrary.sampleEffect(self, options))

/** Takes a value of `self` and picks the `Arb` of the next (fast-check's `chain`). */
export const chain: {
  <A, B>(f: (value: A) => Arb<B>): (self: Arb<A>) => Arb<B>
  <A, B>(self: Arb<A>, f: (value: A) => Arb<B>): Arb<B>
} = Arbitrary.flatMap

/** Maps every value (and every value it shrinks to). */
export const map: {
  <A, B>(f: (value: A) => B): (self: Arb<A>) => Arb<B>
  <A, B>(self: Arb<A>, f: (value: A) => B): Arb<B>
} = Arbitrary.map
