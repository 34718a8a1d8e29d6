#A tiny multivariate unequal-length file with missing values (hand-written test fixture).
@problemName TinyUnequal
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true walk run
@data
0,1,2,3:10,11,12,13:walk
0,?,2,3,4,5,6,7:1,1,1,1,1,1,1,1:run
5,4,?,2:?,3,3,?:walk

0,2,4:1,2,3:run
