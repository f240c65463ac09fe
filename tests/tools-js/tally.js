// Keeps a tally in its durable state (`wasi:keyvalue`): appends `item` to
// the list `seen` and counts calls in `runs`. With `failAfterWrite` it
// writes and then fails (transient), to show a failed attempt's writes are
// dropped.

import { Effect, Transient, s, tool } from '@cofferdam/guest';

export default tool({
  name: 'tally',
  version: '0.1.0',
  description: 'Test tool: appends an item to a list kept in its state and counts its calls.',
  effect: Effect.SIDE_EFFECTING,
  input: s.object({
    item: s.string().describe('What to append.'),
    failAfterWrite: s.boolean().default(false),
  }),
  run({ item, failAfterWrite }, ctx) {
    const state = ctx.state();
    const seen = state.get('seen') ?? [];
    state.set('seen', [...seen, item]);
    const runs = state.increment('runs');
    if (failAfterWrite) throw new Transient(`failing after writing ${item}`);
    return { runs, seen: state.get('seen'), keys: state.keys(), attempt: ctx.attempt, callId: ctx.callId, taskId: ctx.taskId, deadlineMs: ctx.deadlineMs, budget: ctx.remainingBudget() };
  },
});
