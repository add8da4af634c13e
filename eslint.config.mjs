// Lint and format as the Effect repository does: typescript-eslint's
// recommended rules plus @effect/eslint-plugin's dprint rule with Effect's settings.
import * as effectEslint from "@effect/eslint-plugin"
import js from "@eslint/js"
import tseslint from "typescript-eslint"

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", ".tmp/**", "coverage/**", "bench/results.json"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  ...effectEslint.configs.dprint,
  {
    rules: {
      // TypeScript checks names; this rule does not know Node's or the DOM's globals.
      "no-undef": "off",
      "no-fallthrough": "off",
      "no-irregular-whitespace": "off",
      "object-shorthand": "error",
      "prefer-destructuring": "off",
      "no-unused-vars": "off",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-namespace": "off",
      "@typescript-eslint/no-empty-object-type": "off",
      "@typescript-eslint/consistent-type-imports": "error",
      "@effect/dprint": [
        "error",
        {
          config: {
            indentWidth: 2,
            lineWidth: 120,
            semiColons: "asi",
            quoteStyle: "alwaysDouble",
            trailingCommas: "never",
            operatorPosition: "maintain",
            "arrowFunction.useParentheses": "force"
          }
        }
      ]
    }
  },
  {
    // The library imports each of effect's modules by its own path, as Effect's
    // packages do: esbuild keeps the whole of a namespace taken from a barrel
    // ("effect", "effect/http"), which put 20 KB of `Stream` and `PubSub` in
    // every browser bundle (bench table 5a).
    files: ["src/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        paths: ["effect", "effect/http", "effect/persistence"].map((name) => ({
          name,
          message: `import each module by its own path ("${name === "effect" ? "effect/Effect" : `${name}/...`}")`
        }))
      }]
    }
  }
)
