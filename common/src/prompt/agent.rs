//! The prompt of agent mode: one text telling a coding agent which file to complete in place,
//! what the removed code does and which files relate to it (upstream's `bench/agent/base.py`,
//! `make_prompt`). The wording is `common/templates/agent.jinja` (a `task` block), replaceable
//! like the other templates.

use super::PromptError;
use crate::dataset::{Task, TaskContext};
use crate::prompt::masking::MASK_TOKEN;

/// The default agent template.
pub const DEFAULT_AGENT_TEMPLATE: &str = include_str!("../../templates/agent.jinja");

/// Renders the agent's task text. `template` replaces the default when given.
pub fn build_agent_prompt(
    task: &Task,
    context: Option<&TaskContext>,
    max_turns: u32,
    template: Option<&str>,
) -> Result<String, PromptError> {
    let origin = format!("task {}: agent template", task.instance_id);
    let err = |e: minijinja::Error| PromptError::Template {
        origin: origin.clone(),
        message: format!("{e:#}"),
    };
    let mut env = super::environment();
    env.add_template("agent", template.unwrap_or(DEFAULT_AGENT_TEMPLATE))
        .map_err(err)?;
    let t = env.get_template("agent").map_err(err)?;
    // Each related file once, in rank order, never the masked file itself.
    let mut files: Vec<&str> = Vec::new();
    if let Some(c) = context {
        for h in &c.hits {
            let p = h.docid.trim_start_matches("./");
            if p != task.vuln_file && !files.contains(&p) {
                files.push(p);
            }
        }
    }
    let vars = minijinja::context! {
        vuln_file => &task.vuln_file,
        mask_token => MASK_TOKEN,
        function_summary => context.map(|c| c.function_summary.as_str()).unwrap_or(""),
        context_files => files,
        language => &task.language,
        instance_id => &task.instance_id,
        max_turns => max_turns,
    };
    let mut captured = t.render_captured(vars).map_err(err)?;
    let text = captured
        .with_state_mut(|s| s.render_block("task"))
        .map_err(err)?;
    Ok(text.trim_matches('\n').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{ContextHit, LineRange, StaticSpec, TaskSpec};

    fn task() -> Task {
        Task {
            instance_id: "t1".into(),
            repo: "org/demo".into(),
            base_commit: "HEAD".into(),
            vuln_file: "src/app.py".into(),
            vuln_lines: LineRange { start: 2, end: 2 },
            language: "python".into(),
            vuln_source: "CVE-0000-0001".into(),
            vuln_type: "SQLI".into(),
            cwe_id: "CWE-89".into(),
            spec: TaskSpec::V1(StaticSpec {
                seed: true,
                detected_tool: "tool".into(),
                detected_vul_num: 1,
                patch_commit: None,
            }),
            extra: Default::default(),
        }
    }

    fn hit(docid: &str) -> ContextHit {
        ContextHit {
            docid: docid.into(),
            score: None,
            startline: None,
            endline: None,
        }
    }

    #[test]
    fn the_prompt_names_the_file_the_summary_and_each_related_file_once() {
        let ctx = TaskContext {
            instance_id: "t1".into(),
            hits: vec![
                hit("src/db.py"),
                hit("src/app.py"),
                hit("./src/db.py"),
                hit("lib/u.py"),
            ],
            function_summary: "Looks a user up by name.".into(),
        };
        let p = build_agent_prompt(&task(), Some(&ctx), 12, None).unwrap();
        assert!(p.contains("`src/app.py`"), "{p}");
        assert!(p.contains("<MASKED>"), "{p}");
        assert!(p.contains("Looks a user up by name."), "{p}");
        assert_eq!(p.matches("- src/db.py").count(), 1, "{p}");
        assert!(p.contains("- lib/u.py"), "{p}");
        assert!(!p.contains("- src/app.py"), "{p}");
        assert!(p.contains("at most 12 steps"), "{p}");
        let bare = build_agent_prompt(&task(), None, 3, None).unwrap();
        assert!(!bare.contains("related"), "{bare}");
        let own = build_agent_prompt(
            &task(),
            None,
            3,
            Some("{% block task %}do {{ vuln_file }}{% endblock %}"),
        )
        .unwrap();
        assert_eq!(own, "do src/app.py");
        assert!(build_agent_prompt(
            &task(),
            None,
            3,
            Some("{{ nope }}{% block task %}{{ nope }}{% endblock %}")
        )
        .is_err());
    }
}
