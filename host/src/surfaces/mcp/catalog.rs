//! The catalog of management tools: names, what grant each needs, and the
//! JSON Schemas and descriptions (with examples) a model reads.

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use super::identity::{Identity, Manage};

/// What a management tool needs the client's grant to hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Needs {
    Manage(Manage),
    Resolve,
}

/// One management tool.
pub(super) struct ManageTool {
    pub(super) name: &'static str,
    needs: Needs,
    read_only: bool,
    description: &'static str,
    schema: fn() -> Value,
}

pub(super) const TOOLS: &[ManageTool] = &[
    ManageTool {
        name: "schedule_create",
        needs: Needs::Manage(Manage::Schedules),
        read_only: false,
        description: "Create a background schedule that runs one tool call or a multi-step task on a cron, \
            in a time zone, each run under its own token budget and timeout. Runs are made as you. \
            Creating the same schedule twice is harmless; the same name with another definition is refused. \
            Example (every day at 9:00 Berlin time): {\"name\":\"ai-news-digest\",\"cron\":\"0 9 * * *\",\
            \"timezone\":\"Europe/Berlin\",\"tool\":\"digest\",\"input\":{\"topic\":\"AI\"},\
            \"budget_tokens\":20000,\"timeout_ms\":120000}. Rules: runs at least the host's minimum \
            interval apart, a quota of schedules per owner, a budget no higher than the host's maximum, \
            no tool marked sensitive.",
        schema: schedule_create_schema,
    },
    ManageTool {
        name: "schedule_list",
        needs: Needs::Manage(Manage::Schedules),
        read_only: true,
        description: "List your schedules with their state (active or paused and why), next run, \
            runs so far and tokens spent. Example: {}",
        schema: empty_schema,
    },
    ManageTool {
        name: "schedule_show",
        needs: Needs::Manage(Manage::Schedules),
        read_only: true,
        description: "Show one of your schedules: definition, state, next run (UTC and local), \
            runs, failures and tokens spent. Example: {\"name\":\"ai-news-digest\"}",
        schema: name_schema,
    },
    ManageTool {
        name: "schedule_pause",
        needs: Needs::Manage(Manage::Schedules),
        read_only: false,
        description: "Pause one of your schedules: it does not run until resumed; slots that pass \
            while paused are not caught up. Pausing a paused schedule is harmless. \
            Example: {\"name\":\"ai-news-digest\",\"reason\":\"on holiday\"}",
        schema: pause_schema,
    },
    ManageTool {
        name: "schedule_resume",
        needs: Needs::Manage(Manage::Schedules),
        read_only: false,
        description: "Resume one of your paused schedules from now on; its failure count starts \
            again. Example: {\"name\":\"ai-news-digest\"}",
        schema: name_schema,
    },
    ManageTool {
        name: "schedule_delete",
        needs: Needs::Manage(Manage::Schedules),
        read_only: false,
        description: "Delete one of your schedules and its history. Deleting one that does not \
            exist is harmless (deleted: false). Example: {\"name\":\"ai-news-digest\"}",
        schema: name_schema,
    },
    ManageTool {
        name: "schedule_history",
        needs: Needs::Manage(Manage::Schedules),
        read_only: true,
        description: "The runs of one of your schedules, oldest first: slot, status (succeeded, \
            failed, skipped, interrupted, refused), tokens spent (the cost), error. \
            Example: {\"name\":\"ai-news-digest\"}",
        schema: name_schema,
    },
    ManageTool {
        name: "task_start",
        needs: Needs::Manage(Manage::Tasks),
        read_only: false,
        description: "Start a durable multi-step task in the background and return its id at once; \
            follow it with task_status. Each step calls a tool; a step that failed for good undoes the \
            finished steps that have a compensation. Starting a known id with the same steps resumes it. \
            Example: {\"id\":\"report-42\",\"steps\":[{\"name\":\"fetch\",\"tool\":\"fetch\",\
            \"input\":{\"url\":\"https://example.com\"}},{\"name\":\"summarize\",\"tool\":\"summarize\",\
            \"input\":{\"text\":\"{{steps.fetch.output.body}}\"}}]}",
        schema: task_start_schema,
    },
    ManageTool {
        name: "task_status",
        needs: Needs::Manage(Manage::Tasks),
        read_only: true,
        description: "How far one of your tasks is: its state, the step running now, steps done out \
            of all, tokens spent so far, and each step's status and error. \
            Example: {\"id\":\"report-42\"}",
        schema: id_schema,
    },
    ManageTool {
        name: "task_cancel",
        needs: Needs::Manage(Manage::Tasks),
        read_only: false,
        description: "Cancel one of your tasks: the step running now is stopped and the task ends \
            cancelled (a side-effecting step stopped midway becomes an escalation for a human). \
            Finished tasks are left alone. Example: {\"id\":\"report-42\"}",
        schema: id_schema,
    },
    ManageTool {
        name: "task_list",
        needs: Needs::Manage(Manage::Tasks),
        read_only: true,
        description: "List your tasks with their state and steps done. Example: {}",
        schema: empty_schema,
    },
    ManageTool {
        name: "escalation_list",
        needs: Needs::Manage(Manage::Escalations),
        read_only: true,
        description: "List the escalations raised for your calls, tasks and schedules: work a human \
            must decide on (an unknown outcome of a side effect, a failed compensation, a schedule that \
            paused itself). Open ones only unless include_resolved. Example: {}",
        schema: escalation_list_schema,
    },
    ManageTool {
        name: "escalation_show",
        needs: Needs::Manage(Manage::Escalations),
        read_only: true,
        description: "Show one of your escalations: why it was raised, the tool, key, task or \
            schedule, and how a human resolved it. Example: {\"id\":7}",
        schema: escalation_id_schema,
    },
    ManageTool {
        name: "escalation_resolve",
        needs: Needs::Resolve,
        read_only: false,
        description: "Resolve one of your escalations as a human decided: resume (the work did not \
            happen; run it again), mark-done (it happened; output is recorded), compensate (undone by \
            hand) or abort. Example: {\"id\":7,\"resolution\":\"mark-done\",\"output\":{\"sent\":true},\
            \"note\":\"checked the mail log\"}",
        schema: escalation_resolve_schema,
    },
];

fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn empty_schema() -> Value {
    object(json!({}), &[])
}

fn name_property() -> Value {
    json!({"type": "string", "description": "The schedule's name (1-64 of A-Z a-z 0-9 . _ -)."})
}

fn name_schema() -> Value {
    object(json!({"name": name_property()}), &["name"])
}

fn pause_schema() -> Value {
    object(
        json!({
            "name": name_property(),
            "reason": {"type": "string", "description": "Why, for the history."},
        }),
        &["name"],
    )
}

fn id_schema() -> Value {
    object(
        json!({"id": {"type": "string", "description": "The task's id."}}),
        &["id"],
    )
}

fn escalation_id_schema() -> Value {
    object(
        json!({"id": {"type": "integer", "minimum": 1, "description": "The escalation's number."}}),
        &["id"],
    )
}

fn escalation_list_schema() -> Value {
    object(
        json!({"include_resolved": {"type": "boolean", "default": false}}),
        &[],
    )
}

fn escalation_resolve_schema() -> Value {
    object(
        json!({
            "id": {"type": "integer", "minimum": 1},
            "resolution": {"enum": ["resume", "mark-done", "compensate", "abort"]},
            "output": {"description": "With mark-done: the output later calls with the key replay."},
            "note": {"type": "string", "description": "What was checked or done, for the audit."},
        }),
        &["id", "resolution"],
    )
}

fn step_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tool": {"type": "string"},
            "input": {"type": "object", "description": "May refer to earlier steps: {{steps.NAME.output.FIELD}}."},
            "compensate": {
                "type": "object",
                "properties": {"tool": {"type": "string"}, "input": {"type": "object"}},
                "required": ["tool"],
            },
            "pivot": {"type": "boolean"},
            "fallbacks": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "tool"],
    })
}

fn task_properties() -> Value {
    json!({
        "id": {"type": "string", "description": "The task's id: a new one starts, a known one resumes."},
        "steps": {"type": "array", "minItems": 1, "items": step_schema()},
    })
}

fn task_start_schema() -> Value {
    object(task_properties(), &["id", "steps"])
}

fn schedule_create_schema() -> Value {
    let mut task = task_start_schema();
    task["description"] = json!(
        "A multi-step task to run instead of one tool; its runs are named after the schedule."
    );
    task["required"] = json!(["steps"]);
    object(
        json!({
            "name": name_property(),
            "cron": {"type": "string", "description": "Five fields: minute hour day-of-month month day-of-week, e.g. \"0 9 * * 1-5\"."},
            "timezone": {"type": "string", "default": "UTC", "description": "IANA zone, e.g. Europe/Berlin."},
            "tool": {"type": "string", "description": "The tool each run calls (or give task)."},
            "input": {"type": "object", "description": "The tool's input."},
            "task": task,
            "budget_tokens": {"type": "integer", "minimum": 1, "description": "Tokens one run may spend (default: the host's maximum)."},
            "max_cost_per_run": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)? [A-Z]{3}$", "description": "Money one run may spend, such as \"2.00 USD\", at the host's prices (the tighter of this and budget_tokens holds)."},
            "timeout_ms": {"type": "integer", "minimum": 1, "description": "How long one run may take."},
            "catch_up": {"enum": ["skip", "once"], "default": "skip", "description": "Slots missed while the host was down: skip them, or run the latest once."},
            "notify": {"type": "array", "items": {"type": "string"}, "maxItems": 8, "description": "Notification sinks of the host (its [notify.NAME] entries) told when a run succeeds or fails, pauses the schedule or is escalated, e.g. [\"ops-webhook\"]."},
        }),
        &["name", "cron"],
    )
}

/// The management tools `identity` is offered.
pub(crate) fn offered(identity: &Identity) -> impl Iterator<Item = Tool> + '_ {
    TOOLS
        .iter()
        .filter(|t| allowed(identity, t))
        .map(definition_of)
}

/// The definition of management tool `name`.
pub(crate) fn definition(name: &str) -> Option<Tool> {
    TOOLS.iter().find(|t| t.name == name).map(definition_of)
}

fn definition_of(tool: &ManageTool) -> Tool {
    let schema = match (tool.schema)() {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    };
    let annotations = if tool.read_only {
        ToolAnnotations::new().read_only(true).destructive(false)
    } else {
        ToolAnnotations::new().read_only(false).idempotent(true)
    };
    Tool::new(tool.name, tool.description, Arc::new(schema)).with_annotations(annotations)
}

fn allowed(identity: &Identity, tool: &ManageTool) -> bool {
    match tool.needs {
        Needs::Manage(what) => identity.grant.may_manage(what),
        Needs::Resolve => identity.grant.resolve_escalations,
    }
}

/// Whether `name` is a management tool `identity` may use.
pub(crate) fn offers(identity: &Identity, name: &str) -> bool {
    TOOLS.iter().any(|t| t.name == name && allowed(identity, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_management_tool_has_a_reserved_name() {
        for tool in TOOLS {
            assert!(
                crate::model::identity::is_reserved(tool.name),
                "{}",
                tool.name
            );
        }
        assert_eq!(TOOLS.len(), crate::model::identity::MANAGEMENT_TOOLS.len());
    }
}
