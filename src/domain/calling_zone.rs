//! A recipient's time zone from its number, where its country calling code names exactly one: quiet
//! hours are kept in the recipient's own time when a message does not say its `timezone`.
//!
//! The table pairs ITU-T E.164 country calling codes with the IANA time zone database's `zone1970.tab`:
//! a code is listed only when every country it serves has a single zone there (Turkey, the United
//! Kingdom, Nepal...), by that country's name in `zone.tab`. The codes' countries are libphonenumber's
//! (`phonenumbers` 9.0.43, `_COUNTRY_CODE_TO_REGION_CODE`), the zones tzdata 2025b's: every code they
//! give a single zone is here, 181 with the exceptions below. Codes of countries spanning zones (+1, +7, +55, +61, +62, +52, +34 with the Canaries,
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
//! +212 is listed though libphonenumber gives it Western Sahara too (`Africa/El_Aaiun`, the same clocks). A message to those places that must keep its quiet
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
    ("91", Tz::Asia__Kolkata),
    ("92", Tz::Asia__Karachi),
    ("94", Tz::Asia__Colombo),
    ("95", Tz::Asia__Yangon),
    ("98", Tz::Asia__Tehran),
    ("51", Tz::America__Lima),
    ("53", Tz::America__Havana),
    ("57", Tz::America__Bogota),
    ("58", Tz::America__Caracas),
    ("93", Tz::Asia__Kabul),
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
    ("211", Tz::Africa__Juba),
    ("218", Tz::Africa__Tripoli),
    ("220", Tz::Africa__Banjul),
    ("221", Tz::Africa__Dakar),
    ("222", Tz::Africa__Nouakchott),
    ("223", Tz::Africa__Bamako),
    ("224", Tz::Africa__Conakry),
    ("225", Tz::Africa__Abidjan),
    ("226", Tz::Africa__Ouagadougou),
    ("227", Tz::Africa__Niamey),
    ("228", Tz::Africa__Lome),
    ("229", Tz::Africa__PortoNovo),
    ("230", Tz::Indian__Mauritius),
    ("231", Tz::Africa__Monrovia),
    ("232", Tz::Africa__Freetown),
    ("233", Tz::Africa__Accra),
    ("235", Tz::Africa__Ndjamena),
    ("236", Tz::Africa__Bangui),
    ("237", Tz::Africa__Douala),
    ("238", Tz::Atlantic__Cape_Verde),
    ("239", Tz::Africa__Sao_Tome),
    ("240", Tz::Africa__Malabo),
    ("241", Tz::Africa__Libreville),
    ("242", Tz::Africa__Brazzaville),
    ("244", Tz::Africa__Luanda),
    ("245", Tz::Africa__Bissau),
    ("246", Tz::Indian__Chagos),
    ("248", Tz::Indian__Mahe),
    ("249", Tz::Africa__Khartoum),
    ("250", Tz::Africa__Kigali),
    ("251", Tz::Africa__Addis_Ababa),
    ("252", Tz::Africa__Mogadishu),
    ("253", Tz::Africa__Djibouti),
    ("255", Tz::Africa__Dar_es_Salaam),
    ("256", Tz::Africa__Kampala),
    ("257", Tz::Africa__Bujumbura),
    ("258", Tz::Africa__Maputo),
    ("260", Tz::Africa__Lusaka),
    ("261", Tz::Indian__Antananarivo),
    ("263", Tz::Africa__Harare),
    ("264", Tz::Africa__Windhoek),
    ("265", Tz::Africa__Blantyre),
    ("266", Tz::Africa__Maseru),
    ("267", Tz::Africa__Gaborone),
    ("268", Tz::Africa__Mbabane),
    ("269", Tz::Indian__Comoro),
    ("291", Tz::Africa__Asmara),
    ("297", Tz::America__Aruba),
    ("298", Tz::Atlantic__Faroe),
    ("350", Tz::Europe__Gibraltar),
    ("352", Tz::Europe__Luxembourg),
    ("355", Tz::Europe__Tirane),
    ("356", Tz::Europe__Malta),
    ("373", Tz::Europe__Chisinau),
    ("374", Tz::Asia__Yerevan),
    ("375", Tz::Europe__Minsk),
    ("376", Tz::Europe__Andorra),
    ("377", Tz::Europe__Monaco),
    ("378", Tz::Europe__San_Marino),
    ("382", Tz::Europe__Podgorica),
    ("387", Tz::Europe__Sarajevo),
    ("389", Tz::Europe__Skopje),
    ("423", Tz::Europe__Vaduz),
    ("500", Tz::Atlantic__Stanley),
    ("501", Tz::America__Belize),
    ("502", Tz::America__Guatemala),
    ("503", Tz::America__El_Salvador),
    ("504", Tz::America__Tegucigalpa),
    ("505", Tz::America__Managua),
    ("506", Tz::America__Costa_Rica),
    ("507", Tz::America__Panama),
    ("508", Tz::America__Miquelon),
    ("509", Tz::America__PortauPrince),
    ("590", Tz::America__Guadeloupe),
    ("591", Tz::America__La_Paz),
    ("592", Tz::America__Guyana),
    ("594", Tz::America__Cayenne),
    ("595", Tz::America__Asuncion),
    ("596", Tz::America__Martinique),
    ("597", Tz::America__Paramaribo),
    ("598", Tz::America__Montevideo),
    ("599", Tz::America__Curacao),
    ("670", Tz::Asia__Dili),
    ("672", Tz::Pacific__Norfolk),
    ("673", Tz::Asia__Brunei),
    ("674", Tz::Pacific__Nauru),
    ("676", Tz::Pacific__Tongatapu),
    ("677", Tz::Pacific__Guadalcanal),
    ("678", Tz::Pacific__Efate),
    ("679", Tz::Pacific__Fiji),
    ("680", Tz::Pacific__Palau),
    ("681", Tz::Pacific__Wallis),
    ("682", Tz::Pacific__Rarotonga),
    ("683", Tz::Pacific__Niue),
    ("685", Tz::Pacific__Apia),
    ("687", Tz::Pacific__Noumea),
    ("688", Tz::Pacific__Funafuti),
    ("690", Tz::Pacific__Fakaofo),
    ("850", Tz::Asia__Pyongyang),
    ("853", Tz::Asia__Macau),
    ("855", Tz::Asia__Phnom_Penh),
    ("856", Tz::Asia__Vientiane),
    ("960", Tz::Indian__Maldives),
    ("963", Tz::Asia__Damascus),
    ("964", Tz::Asia__Baghdad),
    ("967", Tz::Asia__Aden),
    ("968", Tz::Asia__Muscat),
    ("973", Tz::Asia__Bahrain),
    ("975", Tz::Asia__Thimphu),
    ("977", Tz::Asia__Kathmandu),
    ("992", Tz::Asia__Dushanbe),
    ("993", Tz::Asia__Ashgabat),
    ("996", Tz::Asia__Bishkek),
    ("90392", Tz::Asia__Famagusta),
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
        assert_eq!(zone_of_number("+9779812345678"), Some(Tz::Asia__Kathmandu));
        assert_eq!(zone_of_number("+51912345678"), Some(Tz::America__Lima));
        assert_eq!(zone_of_number("+22990123456"), Some(Tz::Africa__PortoNovo));
        assert_eq!(zone_of_number("+243812345678"), None, "+243 spans two zones");
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
