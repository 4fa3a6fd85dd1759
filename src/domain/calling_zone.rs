//! A recipient's time zone from its number, where its country calling code names exactly one: quiet
//! hours are kept in the recipient's own time when a message does not say its `timezone`.
//!
//! The table pairs ITU-T E.164 country calling codes (ITU Operational Bulletin, "List of ITU-T
//! Recommendation E.164 assigned country codes") with the IANA time zone database's `zone1970.tab`: a code
//! is listed only when every country it serves has a single zone there (Turkey, the United Kingdom,
//! Germany...). Codes of countries spanning zones (+1, +7, +55, +61, +62, +52, +34 with the Canaries,
//! +351 with the Azores...) are left out on purpose: for them `QUIET_HOURS_TZ` applies, or the message's
//! own `timezone`. Longest prefix wins, so +90 and +905... resolve alike and +44 never shadows a
//! three-digit code.
//!
//! Six codes are listed though `zone1970.tab` gives their country a second zone, because the main one
//! is right for nearly all of their numbers and far closer for the rest than `QUIET_HOURS_TZ` would be:
//! +64 (the Chatham Islands, 600 people, run 45 min ahead of Auckland), +86 (Xinjiang's informal UTC+6;
//! China's official time is Beijing's), +380 (Crimea, on Moscow time since 2014: an hour ahead in
//! winter), +60 (Sarawak and Sabah, same offset), +84 (the table's `Asia/Bangkok` for the north, same
//! offset) and +49 (Büsingen on `Europe/Zurich`, same clocks).
//!
//! The table is not every single-zone country: one without a line (Nepal +977, Peru +51, Iraq +964...)
//! gets `QUIET_HOURS_TZ` like the several-zone ones until a line is added. A message to those places that must keep its quiet
//! hours to the minute says its `timezone`.
//!
//! One area code is listed beside its country's: +90 392, Northern Cyprus's fixed lines, on
//! `Asia/Famagusta` (an hour behind Istanbul in winter, as Cyprus keeps EU summer time). Its mobile
//! numbers share Turkey's mobile prefixes (+90 533, 542, 548) and keep Istanbul's zone: a message to
//! one says its `timezone`.

use chrono_tz::Tz;

/// Calling code (digits after `+`) → its country's single zone.
const ZONES: &[(&str, Tz)] = &[
    ("20", Tz::Africa__Cairo),
    ("27", Tz::Africa__Johannesburg),
    ("30", Tz::Europe__Athens),
    ("31", Tz::Europe__Amsterdam),
    ("32", Tz::Europe__Brussels),
    ("33", Tz::Europe__Paris),
    ("36", Tz::Europe__Budapest),
    ("39", Tz::Europe__Rome),
    ("40", Tz::Europe__Bucharest),
    ("41", Tz::Europe__Zurich),
    ("43", Tz::Europe__Vienna),
    ("44", Tz::Europe__London),
    ("45", Tz::Europe__Copenhagen),
    ("46", Tz::Europe__Stockholm),
    ("47", Tz::Europe__Oslo),
    ("48", Tz::Europe__Warsaw),
    ("49", Tz::Europe__Berlin),
    ("60", Tz::Asia__Kuala_Lumpur),
    ("63", Tz::Asia__Manila),
    ("64", Tz::Pacific__Auckland),
    ("65", Tz::Asia__Singapore),
    ("66", Tz::Asia__Bangkok),
    ("81", Tz::Asia__Tokyo),
    ("82", Tz::Asia__Seoul),
    ("84", Tz::Asia__Ho_Chi_Minh),
    ("86", Tz::Asia__Shanghai),
    ("90", Tz::Europe__Istanbul),
    ("90392", Tz::Asia__Famagusta),
    ("91", Tz::Asia__Kolkata),
    ("92", Tz::Asia__Karachi),
    ("94", Tz::Asia__Colombo),
    ("95", Tz::Asia__Yangon),
    ("98", Tz::Asia__Tehran),
    ("212", Tz::Africa__Casablanca),
    ("213", Tz::Africa__Algiers),
    ("216", Tz::Africa__Tunis),
    ("234", Tz::Africa__Lagos),
    ("254", Tz::Africa__Nairobi),
    ("353", Tz::Europe__Dublin),
    ("354", Tz::Atlantic__Reykjavik),
    ("358", Tz::Europe__Helsinki),
    ("359", Tz::Europe__Sofia),
    ("370", Tz::Europe__Vilnius),
    ("371", Tz::Europe__Riga),
    ("372", Tz::Europe__Tallinn),
    ("380", Tz::Europe__Kyiv),
    ("381", Tz::Europe__Belgrade),
    ("385", Tz::Europe__Zagreb),
    ("386", Tz::Europe__Ljubljana),
    ("420", Tz::Europe__Prague),
    ("421", Tz::Europe__Bratislava),
    ("852", Tz::Asia__Hong_Kong),
    ("880", Tz::Asia__Dhaka),
    ("886", Tz::Asia__Taipei),
    ("961", Tz::Asia__Beirut),
    ("962", Tz::Asia__Amman),
    ("965", Tz::Asia__Kuwait),
    ("966", Tz::Asia__Riyadh),
    ("971", Tz::Asia__Dubai),
    ("972", Tz::Asia__Jerusalem),
    ("974", Tz::Asia__Qatar),
    ("994", Tz::Asia__Baku),
    ("995", Tz::Asia__Tbilisi),
];

/// The single time zone of the country `number` (E.164, `+` and digits) calls, if its code has one.
pub fn zone_of_number(number: &str) -> Option<Tz> {
    let digits = number.strip_prefix('+')?;
    // Country codes are 1 to 3 digits, with an area code 5 at most; the longest that matches wins.
    (1..=5)
        .rev()
        .filter_map(|len| digits.get(..len))
        .find_map(|code| ZONES.iter().find(|(c, _)| *c == code).map(|(_, zone)| *zone))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_zone_countries_resolve_and_multi_zone_ones_do_not() {
        assert_eq!(zone_of_number("+905551111111"), Some(Tz::Europe__Istanbul));
        assert_eq!(zone_of_number("+447911123456"), Some(Tz::Europe__London));
        assert_eq!(
            zone_of_number("+35312345678"),
            Some(Tz::Europe__Dublin),
            "the longest code wins"
        );
        assert_eq!(
            zone_of_number("+903922281234"),
            Some(Tz::Asia__Famagusta),
            "Northern Cyprus's fixed lines"
        );
        assert_eq!(zone_of_number("+12025550123"), None, "+1 spans many zones");
        assert_eq!(zone_of_number("+79161234567"), None, "+7 spans many zones");
        assert_eq!(zone_of_number("905551111111"), None, "not E.164");
    }

    #[test]
    fn the_table_lists_each_code_once() {
        let mut codes: Vec<&str> = ZONES.iter().map(|(code, _)| *code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ZONES.len());
    }
}
