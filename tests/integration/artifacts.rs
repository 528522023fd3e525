use serde_json::json;

use crate::common::Server;

#[test]
fn create_get_update_delete_keeps_the_clients_json() {
    let s = Server::start();
    let p = s.project("p");
    let v = s
        .post(
            "/api/v1/context/artifacts",
            json!({"project_id": p, "source_agent": "analyst", "artifact_type": "software_specification",
                   "content": {"title": "spec", "items": [1, 2, {"deep": true}]}, "metadata": {"v": "1"}}),
        )
        .expect(201);
    let id = v["context_id"].as_str().unwrap().to_string();
    let got = s
        .get(&format!("/api/v1/context/artifacts/{id}"))
        .expect(200);
    for field in [
        "context_id",
        "project_id",
        "source_agent",
        "artifact_type",
        "content",
        "metadata",
        "created_at",
        "updated_at",
    ] {
        assert!(!got[field].is_null(), "{field} missing");
    }
    assert_eq!(got["content"]["items"][2]["deep"], true);
    assert_eq!(got["metadata"]["v"], "1");
    // Read twice (the second from the cache), then update: the next read must see the update.
    s.get(&format!("/api/v1/context/artifacts/{id}"))
        .expect(200);
    let updated = s
        .patch(
            &format!("/api/v1/context/artifacts/{id}"),
            json!({"content": "v2"}),
        )
        .expect(200);
    assert_eq!(updated["version"], 2);
    let got = s
        .get(&format!("/api/v1/context/artifacts/{id}"))
        .expect(200);
    assert_eq!(got["content"], "v2");
    assert_eq!(got["metadata"]["v"], "1", "metadata kept");
    s.patch(&format!("/api/v1/context/artifacts/{id}"), json!({}))
        .expect_error(422, "invalid_field");
    let deleted = s
        .delete(&format!("/api/v1/context/artifacts/{id}"))
        .expect(200);
    assert_eq!(deleted["deleted"], true);
    s.get(&format!("/api/v1/context/artifacts/{id}"))
        .expect_error(404, "artifact_not_found");
    s.delete(&format!("/api/v1/context/artifacts/{id}"))
        .expect_error(404, "artifact_not_found");
    s.patch(
        &format!("/api/v1/context/artifacts/{id}"),
        json!({"content": 1}),
    )
    .expect_error(404, "artifact_not_found");
    let c = s
        .get(&format!("/api/v1/projects/{p}/completion"))
        .expect(200);
    assert_eq!(c["artifacts_available"], false);
}

#[test]
fn list_filters_by_type_and_source_with_optional_content() {
    let s = Server::start();
    let p = s.project("p");
    let plan = s.artifact(&p, "project_plan", "analyst", json!({"n": 1}));
    let code1 = s.artifact(&p, "source_code", "coder", json!("fn main() {}"));
    let tests = s.artifact(&p, "test_results", "tester", json!({"passed": 3}));
    let code2 = s.artifact(&p, "source_code", "coder", json!("fn f() {}"));
    let arch = s.artifact(&p, "system_architecture", "architect", json!([]));
    let other = s.project("other");
    s.artifact(&other, "source_code", "coder", json!("not mine"));
    let ids = |path: &str| -> Vec<String> {
        s.get(path)
            .expect(200)
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["context_id"].as_str().unwrap().to_string())
            .collect()
    };
    let base = format!("/api/v1/context/project/{p}/artifacts");
    assert_eq!(
        ids(&base),
        vec![
            plan.clone(),
            code1.clone(),
            tests.clone(),
            code2.clone(),
            arch.clone()
        ]
    );
    assert_eq!(
        ids(&format!("{base}?artifact_type=source_code")),
        vec![code1.clone(), code2.clone()]
    );
    assert_eq!(
        ids(&format!("{base}?source_agent=tester")),
        vec![tests.clone()]
    );
    assert_eq!(
        ids(&format!(
            "{base}?artifact_type=source_code&source_agent=tester"
        )),
        Vec::<String>::new()
    );
    let summaries = s.get(&base).expect(200);
    assert!(
        summaries[0].get("content").is_none(),
        "summaries leave content out"
    );
    let full = s.get(&format!("{base}?include=content")).expect(200);
    assert_eq!(full[1]["content"], "fn main() {}");
    let page = s.get(&format!("{base}?limit=2"));
    assert_eq!(page.expect(200).as_array().unwrap().len(), 2);
    let cursor = page.header("x-next-cursor").unwrap().to_string();
    assert_eq!(
        ids(&format!("{base}?limit=2&cursor={cursor}")),
        vec![tests.clone(), code2.clone()]
    );
    s.get(&format!("{base}?artifact_type=No%20vel"))
        .expect_error(422, "invalid_field");
    s.get(&format!("{base}?include=everything"))
        .expect_error(422, "invalid_field");

    let batch = s
        .post(
            "/api/v1/context/artifacts/batch",
            json!({"context_ids": [arch, "0190b5c2-1111-7000-8000-000000000000", plan]}),
        )
        .expect(200);
    let found: Vec<&str> = batch["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["context_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        found,
        vec![arch.as_str(), plan.as_str()],
        "in the order asked"
    );
    assert_eq!(batch["missing"][0], "0190b5c2-1111-7000-8000-000000000000");
}

#[test]
fn bad_artifacts_are_refused_and_nothing_is_stored() {
    let s = Server::start();
    let p = s.project("p");
    let path = "/api/v1/context/artifacts";
    let m = s
        .post(path, json!({"project_id": p, "source_agent": "analyst", "artifact_type": "Poem!", "content": 1}))
        .expect_error(422, "invalid_field");
    assert!(
        m.starts_with("artifact_type") && m.contains("`Poem!` is not a name"),
        "the field and the rule named: {m}"
    );
    s.post(path, json!({"project_id": p, "source_agent": "Bard", "artifact_type": "project_plan", "content": 1}))
        .expect_error(422, "invalid_field");
    let m = s
        .post(
            path,
            json!({"project_id": p, "source_agent": "analyst", "artifact_type": "project_plan"}),
        )
        .expect_error(422, "invalid_field");
    assert!(m.contains("content"), "{m}");
    s.post(
        path,
        json!({"project_id": "0190b5c2-1111-7000-8000-000000000000", "source_agent": "analyst", "artifact_type": "project_plan", "content": 1}),
    )
    .expect_error(404, "project_not_found");
    let listed = s
        .get(&format!("/api/v1/context/project/{p}/artifacts"))
        .expect(200);
    assert_eq!(listed.as_array().unwrap().len(), 0);
    s.get("/api/v1/context/artifacts/xyz")
        .expect_error(400, "invalid_id");
}
