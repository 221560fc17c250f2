//! An expired token: the stack's user service issues 2-second tokens.

mod support;

use std::time::Duration;

use support::{stack, unique, Home};

#[test]
fn an_expired_token_asks_for_a_new_login_with_exit_3() {
    let stack = stack(&[("TODOAPP_USER_JWT__LIFETIME_SECS", "2")]);
    let home = Home::new(stack);
    let user = unique("eve");
    home.register(&user, "correct horse battery");
    std::thread::sleep(Duration::from_millis(3100));

    home.run(&["ls"])
        .fails(3, "your login expired")
        .fails(3, "run `todoctl login` again");
    home.run(&["add", "never stored"]).fails(3, "expired");
    home.run(&["whoami"]).fails(3, "expired");

    // A new login works again (the stored username is the default).
    home.run_stdin(&["login", "--password-stdin"], "correct horse battery\n")
        .ok();
    let listed = home.run(&["ls", "--json"]).ok().json();
    assert_eq!(
        listed,
        serde_json::json!([]),
        "the refused add stored nothing"
    );
}
