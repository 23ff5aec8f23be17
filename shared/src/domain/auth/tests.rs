use super::*;

#[test]
fn entries_parse_with_roles_and_digests() {
    let digest = hex::encode(sha256(b"hashed-key"));
    let keys = ApiKeys::parse(&format!(
        " write=device-1 , read=dash-1,read+admin=sha256:{digest},"
    ))
    .expect("valid");
    let (id, roles) = keys.authenticate(b"device-1").expect("known");
    assert_eq!(id, key_id("device-1"));
    assert!(roles.has(Role::Write) && !roles.has(Role::Read));
    let (id, roles) = keys.authenticate(b"hashed-key").expect("known by digest");
    assert_eq!(id.as_str(), &digest[..12]);
    assert!(roles.has(Role::Read) && roles.has(Role::Admin) && !roles.has(Role::Write));
    assert!(keys.authenticate(b"device-2").is_none());
    assert!(keys.authenticate(b"").is_none());
}

#[test]
fn key_id_is_twelve_hex_digits_of_the_sha256() {
    // sha256("abc") = ba7816bf8f01cfea...
    assert_eq!(key_id("abc").as_str(), "ba7816bf8f01");
}

#[test]
fn a_secret_may_contain_equals_signs() {
    let keys = ApiKeys::parse("write=a=b").expect("valid");
    assert!(keys.authenticate(b"a=b").is_some());
}

#[test]
fn bad_entries_are_named_without_their_secret() {
    let cases = [
        ("write=ok,reed=topsecret", 2, "unknown role"),
        ("topsecret", 1, "expected ROLES=SECRET"),
        ("write=", 1, "empty"),
        ("=topsecret", 1, "unknown role"),
        ("write+=topsecret", 1, "unknown role"),
        ("read=sha256:ABC", 1, "64 lowercase hex"),
        (
            &*format!("read=sha256:{}", "A".repeat(64)),
            1,
            "64 lowercase hex",
        ),
        ("write=topsecret,read=topsecret", 2, "repeats"),
    ];
    for (spec, entry, problem) in cases {
        let e = ApiKeys::parse(spec).expect_err(spec);
        assert_eq!(e.entry, entry, "{spec}");
        let text = e.to_string();
        assert!(text.contains(problem), "{spec}: {text}");
        assert!(
            !text.contains("topsecret"),
            "{spec} leaked its secret: {text}"
        );
    }
}

#[test]
fn empty_spec_means_no_keys() {
    assert!(ApiKeys::parse("").expect("valid").is_empty());
    assert!(ApiKeys::parse(" , ").expect("valid").is_empty());
}

#[test]
fn plaintext_entries_are_reported_by_id() {
    let digest = hex::encode(sha256(b"hashed"));
    let keys = ApiKeys::parse(&format!("write=plain,read=sha256:{digest}")).expect("valid");
    assert_eq!(keys.plaintext_ids(), vec![&key_id("plain")]);
}
