// Type-level checks of types/index.d.ts (not run by node --test): `npx tsc -p test/tsconfig.json`
// must pass, including the @ts-expect-error lines.
import { s, tool, Effect, InvalidInput, http, type Infer } from '@cofferdam/guest';

const input = s.object({
  name: s.string().describe('x'),
  count: s.integer().default(1),
  tags: s.array(s.string()).optional(),
  mode: s.enum(['a', 'b']),
  meta: s.record(s.number()).optional(),
  nested: s.object({ flag: s.boolean() }),
});
type I = Infer<typeof input>;
const ok: I = { name: 'n', count: 1, mode: 'a', nested: { flag: true } };

export default tool({
  name: 'x', version: '0.1.0', description: 'd', effect: Effect.PURE, input,
  async run(i, ctx) {
    const n: string = i.name;
    const c: number = i.count;
    const t: string[] | undefined = i.tags;
    const m: 'a' | 'b' = i.mode;
    const f: boolean = i.nested.flag;
    ctx.logInfo(`${n} ${c} ${t} ${m} ${f} ${ctx.callId}`);
    if (!n) throw new InvalidInput('empty');
    const res = http.errorForStatus(await http.send('https://example.com'));
    return { ok, res: await http.readJson(res) };
  },
});
// @ts-expect-error count must be a number
const bad: I = { name: 'n', count: 'x', mode: 'a', nested: { flag: true } };
// @ts-expect-error mode is an enum
const bad2: I = { name: 'n', count: 1, mode: 'c', nested: { flag: true } };
// @ts-expect-error name is required
const bad3: I = { count: 1, mode: 'a', nested: { flag: true } };
