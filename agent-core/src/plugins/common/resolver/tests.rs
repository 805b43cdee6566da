use super::*;

const WAIT: Duration = Duration::from_secs(10);
const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[actix_rt::test]
async fn literals_are_answered_at_once_and_never_looked_up() {
    let r = Resolver::new(DEFAULT_TTL);
    for (host, ip) in [
        ("127.0.0.1", LOOPBACK),
        (" 10.1.2.3 ", "10.1.2.3".parse().unwrap()),
        ("::1", "::1".parse().unwrap()),
        ("[::1]", "::1".parse().unwrap()),
    ] {
        assert_eq!(&*r.lookup(host, WAIT).await.unwrap(), &[ip], "{host}");
        assert_eq!(r.lookups_of(host), 0);
    }
    assert_eq!(r.stats().lookups, 0);
    assert_eq!(r.stats().names, 0);
}

#[actix_rt::test]
async fn two_hundred_callers_on_two_names_cost_two_lookups() {
    // `localhost` comes from /etc/hosts; `0x7f.1` is a numeric form
    // getaddrinfo reads itself (inet_aton) and Rust's parser does not: a
    // real look-up that sends nothing anywhere.
    let r = Resolver::new(DEFAULT_TTL);
    let names = ["localhost", "0x7f.1"];
    let round = || futures::future::join_all((0..200).map(|i| r.lookup(names[i % 2], WAIT)));
    for answer in round().await {
        let ips = answer.unwrap();
        assert!(
            ips.contains(&LOOPBACK) || ips.iter().any(IpAddr::is_loopback),
            "{ips:?}"
        );
    }
    let s = r.stats();
    assert_eq!(s.lookups, 2, "{s:?}");
    assert_eq!(s.names, 2);
    assert_eq!(s.hits + s.coalesced, 198, "{s:?}");
    assert_eq!((r.lookups_of("localhost"), r.lookups_of("0X7F.1")), (1, 1));
    // The next round is served from the cache.
    for answer in round().await {
        answer.unwrap();
    }
    assert_eq!(r.stats().lookups, 2);
    assert_eq!(r.stats().hits, s.hits + 200);
}

#[actix_rt::test]
async fn a_zero_lifetime_keeps_nothing() {
    let r = Resolver::new(Duration::ZERO);
    assert_eq!(&*r.lookup("0x7f.0.1", WAIT).await.unwrap(), &[LOOPBACK]);
    assert_eq!(&*r.lookup("0x7f.0.1", WAIT).await.unwrap(), &[LOOPBACK]);
    assert_eq!(r.lookups_of("0x7f.0.1"), 2);
    assert_eq!(r.stats().ttl_sec, 0.0);
    r.set_ttl(Duration::from_secs(30));
    r.lookup("0x7f.0.1", WAIT).await.unwrap();
    r.lookup("0x7f.0.1", WAIT).await.unwrap();
    assert_eq!(r.lookups_of("0x7f.0.1"), 3);
}

#[actix_rt::test]
async fn a_failure_is_an_error_with_the_system_reason_and_is_remembered_briefly() {
    // A label over 63 bytes: glibc refuses it without sending a query.
    let bad = format!("{}.invalid", "a".repeat(70));
    let system = (bad.as_str(), 0u16)
        .to_socket_addrs()
        .expect_err("unresolvable");
    let r = Resolver::new(DEFAULT_TTL);
    let e = r.lookup(&bad, WAIT).await.expect_err("fails");
    assert_eq!(e, format!("cannot resolve {bad}: {system}"));
    assert_eq!(r.lookup(&bad, WAIT).await.expect_err("fails"), e);
    assert_eq!(r.lookups_of(&bad), 1, "the failure is cached");
    assert_eq!(r.stats().failures, 1);
}

#[actix_rt::test]
async fn the_shared_resolver_counts_per_name() {
    let name = "0x7f.0.0.2";
    let answers = futures::future::join_all((0..50).map(|_| lookup(name, WAIT))).await;
    for a in answers {
        assert_eq!(&*a.unwrap(), &["127.0.0.2".parse::<IpAddr>().unwrap()]);
    }
    assert_eq!(global().lookups_of(name), 1);
    assert!(stats().lookups >= 1);
}
